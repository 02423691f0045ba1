"""renkei as a CKAN: ckanapi's RemoteCKAN and renkei's own `ckan` harvester against a running
renkei that harvested a CKAN site on 127.0.0.1."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ckanapi
import pytest
import requests
from werkzeug.serving import make_server

from catalog.app import create_app
from catalog.api.ckan_dicts import CKAN_NAME, DERIVED_SOURCES
from store.db import Dataset, Store
from tests.servers import TEST_DATA, FakeCKAN, package
from tests.test_harvest_ckan import GOOD, harvest, write_config

# A remote name that is no CKAN name (upper case, Japanese): renkei must derive one.
ODD = package("Kobe_避難所", "神戸市 避難所（名前に日本語）", [("kakogawa_bom.csv", "CSV")],
              org=("kobe-city", "神戸市"), tags=["避難所"])
PACKAGES = GOOD + [ODD]


@dataclass
class Served:
    site: str       # the fake CKAN the data came from (its files stay reachable)
    url: str        # the running renkei
    data_dir: Path


@contextmanager
def renkei_server(data_dir: Path, **config):
    """create_app on a real port, its base URL being that port (links must resolve)."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    server.app = create_app(data_dir, base_url=base, config=config or None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def harvested_renkei(fixture_files, tmp: Path, **config):
    site = FakeCKAN(PACKAGES, fixture_files, max_rows=4)
    data_dir = tmp / "a"
    with site.running() as site_url:
        result = harvest(data_dir, write_config(tmp / "a.yaml", site_url))
        assert result.returncode == 0, result.stderr
        with renkei_server(data_dir, **config) as url:
            yield Served(site_url, url, data_dir)


@pytest.fixture(scope="module")
def served(fixture_files, tmp_path_factory):
    with harvested_renkei(fixture_files, tmp_path_factory.mktemp("ckanapi")) as s:
        yield s


@pytest.fixture
def ckan(served):
    with ckanapi.RemoteCKAN(served.url, user_agent="renkei-test") as remote:
        yield remote


def active_ids(data_dir: Path) -> set[str]:
    """What the catalogue holds: the harvested datasets plus renkei's own theme layers."""
    with Store(data_dir).session() as s:
        return {d.id for d in s.query(Dataset).filter(Dataset.status == "active")}


def all_packages(ckan, **params) -> list[dict]:
    out, start = [], 0
    while True:
        page = ckan.action.package_search(rows=4, start=start, **params)
        out += page["results"]
        start += len(page["results"])
        if not page["results"] or start >= page["count"]:
            return out


def test_status_and_paged_search_see_every_dataset_once(ckan, served):
    status = ckan.action.status_show()
    assert status["ckan_version"].startswith("2.10") and status["locale_default"] == "ja"
    packages = all_packages(ckan, sort="metadata_modified desc")
    expected = active_ids(served.data_dir)
    assert len(packages) == len(expected) >= len(PACKAGES)
    assert {p["id"] for p in packages} == expected
    assert {p["title"] for p in packages} >= {p["title"] for p in PACKAGES}
    stamps = [p["metadata_modified"] for p in packages]
    assert stamps == sorted(stamps, reverse=True)
    assert all(len(s) == 26 and s[10] == "T" and s[19] == "." for s in stamps)  # CKAN's format
    assert sorted(p["name"] for p in packages) == ckan.action.package_list()


def test_package_show_has_the_ckan_shape_and_the_ogc_collection(ckan, served):
    pkg = ckan.action.package_show(id="hyogo-ckan--evac-282103")
    assert pkg["name"] == pkg["id"] == "hyogo-ckan--evac-282103"
    assert pkg["title"] == "加古川市 指定避難所"
    assert pkg["notes"].startswith("国土地理院の指定避難所データです。")
    assert pkg["organization"]["name"] == "kakogawa-city"
    assert pkg["organization"]["title"] == "加古川市"
    assert {"key": "lg_code", "value": "282103"} in pkg["extras"]
    assert [t["name"] for t in pkg["tags"]] == ["避難所", "防災"]
    assert pkg["license_id"] == "cc-by-4.0" and pkg["isopen"] is True
    original, derived, *downloads = pkg["resources"]
    assert [r["position"] for r in pkg["resources"]] == [0, 1, 2, 3, 4]
    assert original["url"] == f"{served.site}/files/gsi_evacuation_282103.json"
    assert original["format"] == "GeoJSON" and original["mimetype"] == "application/geo+json"
    assert original["size"] == (TEST_DATA / "geojson/gsi_evacuation_282103.json").stat().st_size
    assert original["last_modified"] == "2025-06-01T09:30:00.000000"
    assert derived["format"] == "OGC API Features" and derived["renkei_derived"] is True
    assert derived["url"].startswith(served.url + "/ogcapi/collections/")
    collection = requests.get(derived["url"], params={"f": "json"}, timeout=10).json()
    assert collection["title"] == "加古川市 指定避難所"
    assert ckan.action.resource_show(id=original["id"])["url"] == original["url"]
    assert ckan.action.resource_show(id=derived["id"])["url"] == derived["url"]
    table = ckan.action.package_show(id="hyogo-ckan--population")
    assert [r["format"] for r in table["resources"]] == ["CSV"]  # no layer, no OGC resource
    # After the OGC resource come the collection's translated downloads, fetched here.
    col_id = derived["id"].removesuffix("--ogcapi")
    assert [(r["format"], r["mimetype"], r["id"]) for r in downloads] == [
        ("GeoJSON", "application/geo+json", col_id + "--geojson"),
        ("CSV", "text/csv", col_id + "--csv"),
        ("GPKG", "application/geopackage+sqlite3", col_id + "--gpkg")]
    for r, ext in zip(downloads, ("geojson", "csv", "gpkg")):
        assert r["url"] == f"{served.url}/datasets/{pkg['id']}/collections/{col_id}.{ext}"
        assert r["renkei_derived"] is True and r["resource_type"] == "file"
        assert r["name"].startswith("加古川市 指定避難所（") and r["name"].endswith("）")
        assert r["last_modified"] == derived["last_modified"] and len(r["last_modified"]) == 26
        assert ckan.action.resource_show(id=r["id"]) == r
        got = requests.get(r["url"], timeout=30)
        assert got.status_code == 200, r["url"]
        assert got.headers["Content-Type"].split(";")[0] == r["mimetype"]
    geojson, csv, gpkg = (requests.get(r["url"], timeout=30) for r in downloads)
    assert geojson.json()["type"] == "FeatureCollection" and geojson.json()["features"]
    assert csv.content.startswith("\ufeff".encode())
    assert gpkg.content.startswith(b"SQLite format 3\x00")
    with pytest.raises(ckanapi.NotFound):
        ckan.action.resource_show(id=col_id + "--shp")
    with pytest.raises(ckanapi.NotFound):
        ckan.action.resource_show(id="no-such-collection--csv")


def test_a_name_that_is_no_ckan_name_gets_a_stable_derived_one(ckan):
    (pkg,) = ckan.action.package_search(fq='organization:kobe-city')["results"]
    assert pkg["id"] == "hyogo-ckan--Kobe_避難所"
    assert CKAN_NAME.match(pkg["name"]) and pkg["name"] != pkg["id"]
    assert ckan.action.package_show(id=pkg["name"])["id"] == pkg["id"]
    assert ckan.action.package_show(id=pkg["id"])["name"] == pkg["name"]
    assert pkg["name"] in ckan.action.package_list()


def test_filters_facets_and_free_text(ckan, served):
    def names(**params):
        return sorted(p["id"] for p in ckan.action.package_search(rows=100, **params)["results"])
    assert names(fq="organization:yabu-city") == ["hyogo-ckan--yabu-gpkg", "hyogo-ckan--yabu-kml"]
    assert names(fq="tags:避難所") == ["hyogo-ckan--Kobe_避難所", "hyogo-ckan--evac-282103"]
    assert names(fq='tags:"避難所" tags:防災') == ["hyogo-ckan--evac-282103"]  # clauses AND
    assert names(fq="res_format:kml") == ["hyogo-ckan--yabu-kml"]  # formats fold to upper case
    assert names(fq="organization:(yabu-city OR kasai-city)") == [
        "hyogo-ckan--kasai-plane5", "hyogo-ckan--yabu-gpkg", "hyogo-ckan--yabu-kml"]
    assert "hyogo-ckan--yabu-kml" not in names(fq="-organization:yabu-city")
    # (the prefecture-wide theme layer "theme-aed" matches AED as well; it is hyogo-pref's)
    assert names(q="AED", fq="organization:kakogawa-city") == ["hyogo-ckan--yaizu-aed"]
    assert names(q="ＡＥＤ", fq="+dataset_type:dataset -organization:hyogo-pref") == [
        "hyogo-ckan--yaizu-aed"]  # NFKC
    result = ckan.action.package_search(rows=0, **{"facet.field": ["organization", "res_format"],
                                                   "facet.limit": -1})
    assert result["results"] == [] and result["count"] == len(active_ids(served.data_dir))
    orgs = result["facets"]["organization"]
    assert (orgs["kakogawa-city"], orgs["yabu-city"], orgs["kobe-city"]) == (5, 2, 1)
    assert result["facets"]["res_format"]["KML"] == 1
    items = result["search_facets"]["organization"]["items"]
    assert {"name": "kakogawa-city", "display_name": "加古川市", "count": 5} in items
    # CKAN's package_search sorts search_facets items by display name, descending (issue 16)
    assert items == sorted(items, key=lambda i: i["display_name"], reverse=True)
    top = ckan.action.package_search(rows=0, **{"facet.field": '["organization"]',
                                                "facet.limit": 1})
    assert top["facets"]["organization"] == {"kakogawa-city": 5}
    assert set(ckan.action.tag_list()) >= {"避難所", "防災", "AED", "統計"}
    # The merged shelter layer (built from the harvested GSI shelters) carries its theme's title.
    assert ckan.action.tag_list(query="避難") == ["指定緊急避難場所・指定避難所", "避難所"]
    orgs = {o["name"]: o for o in ckan.action.organization_list(all_fields=True)}
    assert orgs["kasai-city"]["package_count"] == 1
    assert {"key": "lg_code", "value": "282201"} in orgs["kasai-city"]["extras"]
    shown = ckan.action.organization_show(id="yabu-city", include_datasets=True)
    assert shown["title"] == "養父市" and len(shown["packages"]) == 2


def test_incremental_harvest_by_metadata_modified(ckan):
    everything = all_packages(ckan, sort="metadata_modified asc")
    middle = everything[len(everything) // 2]["metadata_modified"]
    newer = [p["id"] for p in everything if p["metadata_modified"] >= middle]
    found = ckan.action.package_search(fq=f"metadata_modified:[{middle}Z TO *]", rows=1000,
                                       sort="metadata_modified asc")
    assert [p["id"] for p in found["results"]] == newer and found["count"] == len(newer)
    strictly = ckan.action.package_search(fq=f"metadata_modified:{{{middle}Z TO *]", rows=1000)
    assert strictly["count"] == len([p for p in everything if p["metadata_modified"] > middle])
    assert ckan.action.package_search(fq="metadata_modified:[NOW TO *]")["count"] == 0


def test_errors_look_like_ckan_errors(ckan, served):
    with pytest.raises(ckanapi.NotFound):
        ckan.action.package_show(id="no-such-dataset")
    with pytest.raises(ckanapi.NotAuthorized):
        ckan.action.package_create(name="x", title="x")
    with pytest.raises(ckanapi.SearchQueryError):
        ckan.action.package_search(fq="maintainer:someone")
    with pytest.raises(ckanapi.ValidationError):
        ckan.action.package_search(rows=-1)
    with pytest.raises(ckanapi.ValidationError):
        ckan.action.package_show()
    api = served.url + "/api/3/action/"
    r = requests.get(api + "no_such_action", timeout=10)
    assert r.status_code == 400
    assert r.json() == "Bad request - Action name not known: no_such_action"
    r = requests.get(api + "package_delete", params={"id": "x"}, timeout=10)
    assert r.status_code == 400 and "Please use POST" in r.json()
    r = requests.post(api + "package_update", json={"id": "x"}, timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["__type"] == "Authorization Error" and r.json()["success"] is False
    r = requests.get(api + "package_show", params={"id": "no-such"}, timeout=10)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"help": f"{served.url}/api/3/action/help_show?name=package_show",
                        "success": False,
                        "error": {"__type": "Not Found Error", "message": "Not found"}}
    r = requests.post(api + "package_search", data=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json().startswith("Bad request - JSON Error")


def test_get_json_post_and_form_post_agree(served):
    api = served.url + "/api/action/package_search"  # the unversioned path too
    params = {"fq": "organization:kakogawa-city", "rows": 3, "sort": "name asc"}
    by_get = requests.get(api, params=params, timeout=10).json()["result"]
    by_json = requests.post(api, json=params, timeout=10).json()["result"]
    by_form = requests.post(api, data=params, timeout=10).json()["result"]
    by_form_key = requests.post(api, data={json.dumps(params): "1"}, timeout=10).json()["result"]
    assert by_get == by_json == by_form == by_form_key
    assert by_get["count"] == 5 and len(by_get["results"]) == 3
    jsonp = requests.get(api, params={**params, "callback": "cb"}, timeout=10)
    assert jsonp.text.startswith("cb({") and "javascript" in jsonp.headers["Content-Type"]


def test_renkei_harvests_renkei(served, tmp_path):
    """Round trip: our own `ckan` harvester reads the running renkei into a second data dir and
    gets every dataset back once, with its title and the URLs of its original resources."""
    config = tmp_path / "b.yaml"
    config.write_text(f"sources:\n  - name: renkei-a\n    type: ckan\n    url: {served.url}\n"
                      f"    rows: 4\n    allow_private_networks: true\n", encoding="utf-8")
    data_b = tmp_path / "b"
    # What renkei derived itself (OGC API links, theme layers) is marked renkei_derived and
    # skipped: the second renkei derives its own from the originals.
    result = harvest(data_b, config)
    assert result.returncode == 0, result.stderr
    with Store(served.data_dir).session() as s:
        original = {d.title: sorted(r.url for r in d.resources)
                    for d in s.query(Dataset).filter(Dataset.status == "active")
                    if d.source_name not in DERIVED_SOURCES}
    with Store(data_b).session() as s:
        copies = [d for d in s.query(Dataset) if d.source_name == "renkei-a"]
        assert len(copies) == len(original) >= len(PACKAGES)
        assert len({d.remote_id for d in copies}) == len(copies)  # no duplicates
        assert {d.title for d in copies} == set(original)
        for d in copies:
            urls = [r.url for r in d.resources]
            assert len(urls) == len(set(urls))
            assert sorted(urls) == original[d.title], d.title
        first = {d.id for d in copies}
    harvest(data_b, config)  # a second run adds nothing
    with Store(data_b).session() as s:
        assert {d.id for d in s.query(Dataset) if d.source_name == "renkei-a"} == first
