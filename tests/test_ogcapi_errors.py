"""Errors are values, and every app owns its own files.

Real harvests (the `files` source over CSVs written here) into real data dirs, real GeoPackages
broken on disk, the apps served on 127.0.0.1 and read with requests (or Flask's test client).
A client's mistake is a 400 that says what to fix; a broken file is a 500 that names no server
path and quotes no exception, with the traceback in the log for the operator.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import requests
from flask import request as flask_request
from pygeoapi.api import APIRequest

from catalog.app import create_app
from catalog.cli import main as renkei
from ogcapi.api import get_items
from store import features_pg
from store.db import Store
from tests import pg_mode
from tests.servers import live_server

PLACES = [  # 名称, 住所, 収容人数, 緯度, 経度 (Kakogawa; the figures are made up)
    ("加古川市役所", "加古川市加古川町北在家2000", 500, 34.7568, 134.8413),
    ("加古川駅", "加古川市加古川町篠原町", 0, 34.7697, 134.8296),
    ("日岡山公園", "加古川市加古川町大野", 1200, 34.7787, 134.8466),
    ("加古川図書館", "加古川市加古川町木村", 80, 34.7610, 134.8378),
    ("鶴林寺", "加古川市加古川町北在家424", 150, 34.7620, 134.8520),
]


def harvest(root: Path, source: str, rows) -> Path:
    """Harvest `rows` as the one file of `source` into root/data; returns the data dir."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["名称,住所,収容人数,緯度,経度"] + [",".join(map(str, r)) for r in rows]
    (root / "places.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "sources.yaml").write_text(
        f"sources:\n  - name: {source}\n    type: files\n    organization: kakogawa-city\n"
        "    files:\n      - id: places\n        title: 加古川市の施設\n"
        "        url: places.csv\n        license: cc-by-4.0\n", encoding="utf-8")
    data = root / "data"
    assert renkei(["--data-dir", str(data), "harvest", "--config",
                   str(root / "sources.yaml")]) == 0
    return data


def published(data: Path):
    """(dataset id, collection id, file) of the harvested collection (not the theme layer)."""
    (col,) = [c for c in Store(data).active_collections() if not c.id.startswith("theme-")]
    return col.dataset_id, col.id, (col.path if features_pg.is_postgis(col.path)
                                    else data / col.path)


def lose_table(data: Path, path: str) -> None:
    """PostgreSQL mode's broken version: its table gone from under the catalogue."""
    from sqlalchemy import text
    with features_pg.engine_for(data).begin() as conn:
        conn.execute(text(f'DROP TABLE "{features_pg.table_of(path)}"'))


def break_geometries(path: Path) -> int:
    """Bit rot inside a valid SQLite file: every point geometry's WKB type becomes garbage.

    Nothing SQLite checks changes (same size, same pages), so the file opens and its schema
    reads; only decoding a feature fails, as after a disk error in a blob."""
    raw = bytearray(path.read_bytes())
    envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
    hits = 0
    for m in re.finditer(rb"GP\x00", raw):
        flags = raw[m.start() + 3]
        start = m.start() + 8 + envelope.get((flags >> 1) & 7, 0)
        if flags & 1 and raw[start:start + 5] == b"\x01\x01\x00\x00\x00":
            raw[start + 1:start + 5] = b"\xff\xff\xff\x7f"
            hits += 1
    path.write_bytes(bytes(raw))
    return hits


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def leaks(body: str, data: Path) -> list[str]:
    """What a response must never show: where files live, and what the exception said."""
    words = [str(data), "features/", "malformed", "sqlite3.", "Traceback", "DatabaseError",
             "DataSourceError", "ParseException", "GEOSException", "WKB"]
    found = [w for w in words if w.lower() in body.lower()]
    return found + re.findall(r"v\d+\.gpkg", body)  # a version file's name


def tracebacks(caplog, logger_prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(logger_prefix)
            and r.levelno >= logging.ERROR and r.exc_info and r.exc_info[0] is not None]


# -- one house: two apps in one process ----------------------------------------------------

@pytest.mark.embedded_only(reason="GeoPackage file handles; PostGIS versions are read through "
                                   "the database pool")
def test_two_apps_never_close_each_others_files(tmp_path):
    """App A's publishes must not close files app B still serves (they used to share one
    module-level registry, and A's rebuild closed B's previous version under B's feet)."""
    data_a = harvest(tmp_path / "a", "town-a", PLACES[:2])
    data_b = harvest(tmp_path / "b", "town-b", PLACES[:3])
    (_, cid_a, _), (_, cid_b, file_b1) = published(data_a), published(data_b)
    app_a, app_b = create_app(data_a), create_app(data_b)
    ogc_b = app_b.extensions["renkei_ogcapi"]
    items_a, items_b = (f"/ogcapi/collections/{cid_a}/items?f=json",
                        f"/ogcapi/collections/{cid_b}/items?f=json")
    client_a, client_b = app_a.test_client(), app_b.test_client()
    assert client_b.get(items_b).json["numberMatched"] == 3
    # A request on B that is still running when B publishes: it keeps the API it started with.
    api_then = ogc_b.api()

    harvest(tmp_path / "b", "town-b", PLACES[:4])  # B publishes v2 and deletes v1
    assert not file_b1.exists()
    assert client_b.get(items_b).json["numberMatched"] == 4
    harvest(tmp_path / "a", "town-a", PLACES[:1])  # then A publishes and serves
    assert client_a.get(items_a).json["numberMatched"] == 1

    # B's request finishes on the version it began with: B's own registry still holds it.
    with app_b.test_request_context(items_b):
        req = APIRequest.from_flask(flask_request, api_then.locales)
        _, status, content = get_items(api_then, req, cid_b)
    assert status == 200, content
    assert json.loads(content)["numberMatched"] == 3
    # And both apps keep serving their current versions.
    assert client_b.get(items_b).json["numberMatched"] == 4
    assert client_a.get(items_a).json["numberMatched"] == 1


# -- what the client sent: 400 with a message -------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, collection id, data dir) of a served app over a good harvest."""
    data = harvest(tmp_path_factory.mktemp("good"), "town-good", PLACES)
    _, cid, _ = published(data)
    with live_server(create_app(data)) as url:
        yield url, cid, data


@pytest.mark.parametrize("params, says", [
    ({"filter": '"名称" = '}, "invalid cql2-text filter"),
    ({"filter": "nosuch = 1"}, "unknown property 'nosuch'"),
    ({"filter": "name > 3"}, "cannot be compared with a number"),
    ({"filter": "S_INTERSECTS(geometry, LINESTRING(134 34))"}, "invalid geometry literal"),
    ({"filter": "S_INTERSECTS(geometry, POLYGON((134 34, 135 35)))"},
     "invalid geometry literal"),
    ({"filter": '{"op": "nope"}', "filter-lang": "cql2-json"}, "invalid cql2-json filter"),
    ({"filter": "\"名称\" = 'x'", "filter-lang": "ecql"}, "filter-lang"),
    ({"bbox": "1,2,3"}, "bbox should be either 4 values"),
    ({"bbox": "a,b,c,d"}, "bbox values must be numbers"),
    ({"bbox": "135,35,134,34"}, "miny should be less than maxy"),
    ({"bbox": "1e9,1e9,2e9,2e9", "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/6673"},
     "outside the area"),
    ({"crs": "EPSG:4326"}, "crs 'EPSG:4326' is not supported"),
    ({"limit": "0"}, "limit value should be strictly positive"),
    ({"limit": "many"}, "limit value should be an integer"),
    ({"offset": "-1"}, "offset value should be positive or zero"),
    ({"offset": "99999999999999999999"}, "offset value should be at most"),
    ({"sortby": "nosuch"}, "sortby: unknown property"),
    ({"nosuch": "1"}, "unknown query parameter: nosuch"),
])
def test_what_the_client_sent_wrong_is_400_with_a_message(site, params, says):
    base, cid, data = site
    r = requests.get(f"{base}/ogcapi/collections/{cid}/items", params={**params, "f": "json"},
                     timeout=30)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["code"] in ("InvalidParameterValue", "InvalidQuery")
    assert says in doc["description"], doc
    assert not leaks(r.text, data)


@pytest.mark.parametrize("params", [
    {"f": "csv", "sortby": ","},
    {"f": "jsonld", "sortby": "name,,capacity"},
    {"f": "csv", "offset": "9" * 30},
])
def test_formats_pygeoapi_answers_give_400_too(site, params):
    base, cid, data = site
    r = requests.get(f"{base}/ogcapi/collections/{cid}/items", params=params, timeout=30)
    assert r.status_code == 400, r.text
    assert not leaks(r.text, data)


def test_bad_filter_in_html_is_a_400_page(site):
    base, cid, _ = site
    r = requests.get(f"{base}/ogcapi/collections/{cid}/items",
                     params={"filter": "nosuch = 1", "f": "html"}, timeout=30)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html")
    assert "unknown property" in r.text


def test_numbers_beyond_64_bits_are_answered_not_500(site):
    base, cid, _ = site
    items = f"{base}/ogcapi/collections/{cid}/items"
    huge = "9" * 30
    r = requests.get(f"{items}/{huge}", params={"f": "json"}, timeout=30)
    assert r.status_code == 404, r.text
    doc = requests.get(f"{base}/ogcapi/collections/{cid}/queryables?f=json", timeout=30).json()
    numeric = [k for k, v in doc["properties"].items() if v.get("type") in ("integer", "number")]
    for name in numeric:
        r = requests.get(items, params={"filter": f'"{name}" > {huge}', "f": "json"}, timeout=30)
        assert r.status_code == 200 and r.json()["numberMatched"] == 0, r.text
        r = requests.get(items, params={name: huge, "f": "json"}, timeout=30)
        assert r.status_code == 200 and r.json()["numberMatched"] == 0, r.text


# -- a broken file on disk: 500, nothing shown, everything logged ------------------------------

@pytest.mark.parametrize("damage", [truncate, break_geometries])
def test_broken_geopackage_is_500_without_path_and_logged(tmp_path, caplog, damage):
    data = harvest(tmp_path, "town-broken", PLACES)
    _, cid, path = published(data)
    if pg_mode.active():
        lose_table(data, path)
    elif damage is break_geometries:
        assert break_geometries(path) == len(PLACES)
    else:
        damage(path)
    caplog.set_level(logging.ERROR)
    with live_server(create_app(data)) as base:
        items = f"{base}/ogcapi/collections/{cid}/items"
        for fmt in ("json", "html"):
            caplog.clear()
            r = requests.get(items, params={"f": fmt}, timeout=30)
            assert r.status_code == 500, r.text
            assert not leaks(r.text, data), r.text
            if fmt == "json":
                assert r.json()["code"] == "NoApplicableCode"
                assert "server log" in r.json()["description"]
            else:
                assert r.headers["Content-Type"].startswith("text/html")
            logged = tracebacks(caplog, "ogcapi")
            assert logged, [(r.name, r.getMessage()) for r in caplog.records]
            # The operator learns which collection and which file.
            text = logged[0].getMessage() + caplog.text
            assert cid in text and str(path) in text
        # The rest of the API still answers.
        assert requests.get(f"{base}/ogcapi/collections", params={"f": "json"},
                            timeout=30).status_code == 200


def test_download_of_broken_collection_is_a_polite_500_and_logged(tmp_path, caplog):
    data = harvest(tmp_path, "town-dl", PLACES)
    dataset_id, cid, path = published(data)
    lose_table(data, path) if pg_mode.active() else truncate(path)
    caplog.set_level(logging.ERROR)
    with live_server(create_app(data)) as base:
        for ext in ("geojson", "csv", "gpkg"):
            caplog.clear()
            r = requests.get(f"{base}/datasets/{dataset_id}/collections/{cid}.{ext}", timeout=30)
            assert r.status_code == 500, (ext, r.status_code, r.text[:200])
            assert r.headers["Content-Type"].startswith("text/html")
            assert "Content-Disposition" not in r.headers
            assert "申し訳ありません" in r.text and "加古川市の施設" in r.text
            assert not leaks(r.text, data), r.text
            logged = tracebacks(caplog, "catalog.pages.downloads")
            assert logged and str(path) in logged[0].getMessage(), caplog.text
        # The dataset page still opens; its attribute table says sorry and the log says why.
        caplog.clear()
        page = requests.get(f"{base}/datasets/{dataset_id}", timeout=30)
        assert page.status_code == 200
        assert "属性データを読み込めなかったため、表を表示できません" in page.text
        assert not leaks(page.text, data)
        assert tracebacks(caplog, "catalog.pages.downloads")
        english = requests.get(f"{base}/datasets/{dataset_id}?lang=en", timeout=30)
        assert "the attribute data could not be read" in english.text
