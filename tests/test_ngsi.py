"""City platforms: NGSI v2 (Orion), NGSI-LD and OGC API Features sources against fixture
servers on 127.0.0.1, from the entities and geometries of real published records."""
from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely import get_coordinates
from sqlalchemy import text

from store.db import Dataset, HarvestError, HarvestJob, Store
from harvesters.config import ConfigError, load_config
from harvesters.runner import summary
from tests import published as stored
from tests.ngsi_servers import (LD_CONTEXT, FakeNGSILD, FakeOGCAPI, FakeOrion, fiware_example,
                                gsi_sites, run, source)
from tests.servers import TEST_DATA, live_server

EMERGENCY = TEST_DATA / "geojson/gsi_emergency_282103.json"


def orion_entities():
    # The Smart Data Models example as it is, moved from Galicia to 加古川駅: the readers
    # refuse points outside Japan (and report them by row), which is right for this hub.
    poi = fiware_example("sdm_PointOfInterest_example-normalized.json")
    poi["location"]["value"]["coordinates"] = [134.8414, 34.7569]
    return gsi_sites() + [poi]


def published(store: Store, type_name: str) -> gpd.GeoDataFrame:
    (col,) = [c for c in store.active_collections() if f"--{type_name}--" in c.id]
    return stored.frame(store.data_dir, col.path)


def cached(store: Store, dataset_id: str):
    """The file the harvester wrote for a dataset (its resource URL is `cache:<path>`)."""
    with store.session() as s:
        url = s.get(Dataset, dataset_id).resources[0].url
    assert url.startswith("cache:")
    return store.data_dir / "cache" / url[len("cache:"):]


def v2(url, **kw):
    kw.setdefault("service", "kakogawa")
    kw.setdefault("entity_types", ["EvacuationSite", "PointOfInterest"])
    return source("kakogawa-fiware", "ngsi-v2", url, **kw)


def test_orion_normalized_entities_become_one_collection_per_type(data_dir):
    orion = FakeOrion(orion_entities(), max_limit=30)  # the broker caps below our 1000
    with live_server(orion.app) as url:
        (report,), _ = run(data_dir, v2(url))
        assert (report.status, report.counts["added"], report.errors) == ("done", 2, [])
        store = Store(data_dir)
        version = store.publish_version()
        (again,), _ = run(data_dir, v2(url))
    assert again.counts["unchanged"] == 2 and store.publish_version() == version
    calls = orion.requests
    assert {c["headers"]["Fiware-Service"] for c in calls} == {"kakogawa"}
    assert {c["headers"]["Fiware-Servicepath"] for c in calls} == {"/"}
    assert {c["args"]["options"] for c in calls} == {"count"}
    assert [int(c["args"]["offset"]) for c in calls
            if c["args"]["type"] == "EvacuationSite"] == [0, 30, 60] * 2
    sites = published(store, "EvacuationSite")
    original = gpd.read_file(EMERGENCY)
    assert len(sites) == len(original) == 82
    assert get_coordinates(sites.geometry) == pytest.approx(get_coordinates(original.geometry))
    assert list(sites["name"]) == list(original["施設・場所名"])
    # What the harvester handed to the pipeline: flat properties, one feature per entity.
    flat = gpd.read_file(cached(store, "kakogawa-fiware--EvacuationSite"))
    first = flat.iloc[0]
    assert first["entity_id"] == "urn:ngsi-ld:EvacuationSite:E2821000001201"
    assert json.loads(first["hazardTypes"]) == ["landslide", "earthquake", "tsunami", "greatFire"]
    assert json.loads(first["address"])["addressText"] == "兵庫県加古川市加古川町粟津232-2"
    poi = gpd.read_file(cached(store, "kakogawa-fiware--PointOfInterest"))
    assert poi.iloc[0]["capacity"] == 55 and poi.iloc[0]["name"] == "Playa de a Concha"
    with store.session() as s:
        ds = s.get(Dataset, "kakogawa-fiware--EvacuationSite")
        assert ds.title == "kakogawa-fiware 指定緊急避難場所"
        assert ds.raw["entities"] == 82 and ds.raw["Fiware-Service"] == "kakogawa"
        assert ds.raw["example_entity"]["location"]["type"] == "geo:json"


def test_orion_key_values_and_a_page_size_over_1000(data_dir):
    orion = FakeOrion(orion_entities())
    with live_server(orion.app) as url:
        (report,), _ = run(data_dir, v2(url, key_values=True, limit=5000))
    assert report.status == "done" and not report.errors, summary([report])
    assert {c["args"]["options"] for c in orion.requests} == {"count,keyValues"}
    assert {c["args"]["limit"] for c in orion.requests} == {"1000"}  # Orion's maximum
    sites = published(Store(data_dir), "EvacuationSite")
    assert len(sites) == 82 and sites.iloc[0]["name"] == "県立加古川東高等学校"


def test_wrong_fiware_service_is_a_warning_and_changes_nothing(data_dir):
    orion = FakeOrion(orion_entities())
    with live_server(orion.app) as url:
        run(data_dir, v2(url))
        before = [(c.id, c.path) for c in Store(data_dir).active_collections()]
        (report,), _ = run(data_dir, v2(url, service="kakogwa"))  # a typo in the tenant
    assert report.status == "done" and report.counts["withdrawn"] == 0
    assert any("0 entities of type EvacuationSite" in w and "service" in w
               for w in report.warnings)
    assert [(c.id, c.path) for c in Store(data_dir).active_collections()] == before


def test_types_are_discovered_when_not_configured(data_dir):
    orion = FakeOrion(orion_entities())
    with live_server(orion.app) as url:
        (report,), _ = run(data_dir, source("fw", "ngsi-v2", url, service="kakogawa"))
    assert report.counts["added"] == 2


LD_ENTITIES = gsi_sites(ld=True) + [
    fiware_example("datamodels_jp_EvacuationShelter_example-normalized.jsonld"),
    fiware_example("datamodels_jp_EvacuationSite_example-normalized.jsonld")]


def ld(url, **kw):
    kw.setdefault("tenant", "hyogo")
    kw.setdefault("context", LD_CONTEXT)
    kw.setdefault("entity_types", ["EvacuationSite", "EvacuationShelter"])
    return source("city-ld", "ngsi-ld", url, **kw)


def test_ngsi_ld_pages_through_a_small_cap_with_tenant_and_context(data_dir):
    broker = FakeNGSILD(LD_ENTITIES, max_limit=3)
    with live_server(broker.app) as url:
        (report,), _ = run(data_dir, ld(url))
    assert report.counts["added"] == 2, summary([report])
    calls = broker.requests
    assert all(c["headers"]["Ngsild-Tenant"] == "hyogo" for c in calls)
    assert all(LD_CONTEXT in c["headers"]["Link"] for c in calls)
    assert all(c["args"]["count"] == "true" for c in calls)
    assert len([c for c in calls if c["args"]["type"] == "EvacuationSite"]) == 28  # 83 / 3
    store = Store(data_dir)
    sites = published(store, "EvacuationSite")
    assert len(sites) == 83 and "番町小学校" in set(sites["name"])
    with store.session() as s:
        # No GeoProperty: a catalogue entry with a table preview, not a layer.
        assert s.get(Dataset, "city-ld--EvacuationShelter").resources[0].state == "table"
    (row,) = json.loads(cached(store, "city-ld--EvacuationShelter").read_text("utf-8"))
    assert row["site"] == "urn:ngsi-ld:EvacuationSite:0002"  # Relationship → the object's id
    assert row["openedAt"] == "2026-07-08T09:00:00+09:00"    # DateTime → its text
    assert row["evacueeTotal"] == 30 and row["statusLabel"] == "開設中"


def test_ngsi_ld_without_the_context_finds_nothing_and_says_so(data_dir):
    broker = FakeNGSILD(LD_ENTITIES)
    with live_server(broker.app) as url:
        (report,), _ = run(data_dir, ld(url, context=None, entity_types=["EvacuationSite"]))
    assert report.counts["added"] == 0
    assert any("0 entities of type EvacuationSite" in w for w in report.warnings)


def test_ngsi_ld_key_values(data_dir):
    broker = FakeNGSILD(LD_ENTITIES, max_limit=50)
    with live_server(broker.app) as url:
        (report,), _ = run(data_dir, ld(url, key_values=True, entity_types=["EvacuationSite"]))
    assert report.counts["added"] == 1
    assert {c["args"].get("options") for c in broker.requests} == {"keyValues"}
    assert len(published(Store(data_dir), "EvacuationSite")) == 83


def gsi_collections():
    out = {}
    for code, title in (("282103", "加古川市 指定避難所"), ("282201", "加西市 指定避難所")):
        fc = json.loads((TEST_DATA / f"geojson/gsi_evacuation_{code}.json").read_text("utf-8"))
        out[f"evacuation-{code}"] = (title, fc)
    return out


def test_ogcapi_source_walks_collections_and_next_links(data_dir):
    server = FakeOGCAPI(gsi_collections(), max_limit=7)
    with live_server(server.app) as url:
        (report,), _ = run(data_dir, source("other-ogc", "ogcapi", url + "/", limit=100))
    assert report.counts["added"] == 2 and not report.errors, summary([report])
    store = Store(data_dir)
    counts = {c.title: c.feature_count for c in store.active_collections()
              if c.id.startswith("other-ogc--")}
    assert counts == {"加古川市 指定避難所": 72, "加西市 指定避難所": 33}
    with store.session() as s:
        ds = s.get(Dataset, "other-ogc--evacuation-282103")
        assert ds.license_title == "国土地理院コンテンツ利用規約" and ds.tags == ["避難所"]


def test_ogcapi_source_reads_renkei_itself(data_dir, tmp_path):
    """Our own OGC API (pygeoapi) as the remote: what one hub publishes another can harvest."""
    server = FakeOGCAPI(gsi_collections())
    upstream = tmp_path / "upstream"
    with live_server(server.app) as url:
        run(upstream, source("gsi", "ogcapi", url))
    from catalog.app import create_app
    with live_server(create_app(upstream)) as hub:
        (report,), _ = run(data_dir, source("hub", "ogcapi", hub + "/ogcapi", limit=10))
    # The hub also offers its merged theme layer; the two city layers come back whole.
    assert report.counts["added"] >= 2 and not report.errors, summary([report])
    counts = {c.title: c.feature_count for c in Store(data_dir).active_collections()
              if c.id.startswith("hub--")}
    assert counts["加古川市 指定避難所"] == 72 and counts["加西市 指定避難所"] == 33


SECRET = "s3cr3t-Kakogawa-Client-9f8e"


def test_oauth2_client_credentials_from_the_environment_never_leak(data_dir, monkeypatch):
    monkeypatch.setenv("KAKOGAWA_ID", "renkei-hyogo")
    monkeypatch.setenv("KAKOGAWA_SECRET", SECRET)
    orion = FakeOrion(orion_entities(), client=("renkei-hyogo", SECRET))
    with live_server(orion.app) as url:
        auth = {"type": "oauth2", "token_url": url + "/oauth2/token",
                "client_id_env": "KAKOGAWA_ID", "client_secret_env": "KAKOGAWA_SECRET"}
        (ok,), log_ok = run(data_dir, v2(url, auth=auth))
        assert ok.counts["added"] == 2, summary([ok])
        assert all(c["headers"]["Authorization"].startswith("Bearer tok-")
                   for c in orion.requests)
        monkeypatch.setenv("KAKOGAWA_SECRET", SECRET + "-old")  # a rotated secret
        (bad,), log_bad = run(data_dir, v2(url, auth=auth))
        bearer = {"type": "bearer", "token_env": "KAKOGAWA_TOKEN"}
        monkeypatch.setenv("KAKOGAWA_TOKEN", SECRET + "-token")
        (denied,), log_denied = run(data_dir, v2(url, auth=bearer))
    assert bad.status == "failed"
    assert "OAuth2 token request refused: HTTP 401 (invalid_client)" in summary([bad])
    assert denied.status == "failed" and "HTTP 401" in summary([denied])
    texts = [summary([ok, bad, denied]), *log_ok, *log_bad, *log_denied]
    store = Store(data_dir)
    with store.engine.connect() as conn:
        for table in ("source", "dataset", "resource", "harvest_job", "harvest_error"):
            texts += [json.dumps(list(row), default=str, ensure_ascii=False)
                      for row in conn.execute(text(f"SELECT * FROM {table}"))]
    assert not [t for t in texts if SECRET in t or "tok-1-abcdef" in t]
    with store.session() as s:
        assert s.query(HarvestError).count() >= 2 and s.query(HarvestJob).count() == 3


def test_config_accepts_city_platforms_and_refuses_secrets_in_the_file(tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("""sources:
  - name: kakogawa-fiware
    type: ngsi-v2
    url: https://broker.example.lg.jp/
    service: kakogawa
    entity_types: [EvacuationSite, {type: PointOfInterest, title: 観光スポット}]
    time_limit: 600
    auth: {type: oauth2, token_url: https://idm.example/token, client_id_env: A, client_secret_env: B}
  - name: city-ld
    type: ngsi-ld
    url: https://ld.example.lg.jp/
  - name: other-ogc
    type: ogcapi
    url: https://gis.example.lg.jp/ogcapi/
""", encoding="utf-8")
    sources, _ = load_config(good)
    assert [s.type for s in sources] == ["ngsi-v2", "ngsi-ld", "ogcapi"]
    for bad, message in (
            ("auth: {type: bearer, token: abc}", "environment variable"),
            ("auth: {type: oauth2, token_url: x}", "client_id_env"),
            ("time_limit: forever", "time_limit"),
            ("entity_types: EvacuationSite", "entity_types")):
        path = tmp_path / "bad.yaml"
        path.write_text(f"sources:\n  - name: x\n    type: ngsi-v2\n    url: https://b.example/\n"
                        f"    {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
