"""Two stateless web servers over one PostgreSQL database (issue 14).

Two `renkei serve` processes start with different, empty data dirs and the same
RENKEI_DATABASE_URL; a harvest runs from a third process with a data dir of its own (its
download cache). Without a restart, both serve the same collections, items, downloads and
search results, and both stop serving a withdrawn dataset. Nothing of it lands in the web
servers' data dirs: the catalogue, the search index and the features are all in PostgreSQL.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from tests import pg_mode
from tests.servers import renkei_serve
from tests.test_security_serve import harvest

pytestmark = pytest.mark.pg_only(reason="several servers share one PostgreSQL database")
DATASET = "shared-files--points"


def _sources(folder: Path, with_file: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["地点,緯度,経度,備考"] + [f"共有地点{i},{34.70 + i * 0.001:.6f},"
                                         f"{134.80 + i * 0.001:.6f},メモ{i}" for i in range(40)]
    (folder / "points.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = ("    files:\n      - id: points\n        title: 共有地点の一覧\n"
             "        url: points.csv\n        license: cc-by-4.0\n") if with_file else \
        "    files: []\n"
    config = folder / "sources.yaml"
    config.write_text("sources:\n  - name: shared-files\n    type: files\n"
                      "    organization: kakogawa-city\n    max_withdraw: 1.0\n" + files,
                      encoding="utf-8")
    return config


def _view(base: str) -> dict:
    """What one server answers about the shared catalogue."""
    cols = requests.get(f"{base}/ogcapi/collections?f=json", timeout=30).json()["collections"]
    out = {"collections": sorted(c["id"] for c in cols)}
    found = requests.get(f"{base}/api/3/action/package_search",
                         params={"q": "共有地点"}, timeout=30).json()["result"]
    out["search"] = sorted(p["name"] for p in found["results"])
    for cid in out["collections"]:
        items = requests.get(f"{base}/ogcapi/collections/{cid}/items",
                             params={"f": "json", "limit": 15, "offset": 10}, timeout=30)
        doc = items.json()
        out[cid] = {"status": items.status_code, "matched": doc.get("numberMatched"),
                    "features": doc["features"]}
        one = requests.get(f"{base}/ogcapi/collections/{cid}/items/12?f=json", timeout=30)
        out[cid]["item"] = {k: v for k, v in one.json().items() if k != "links"}  # own URL
        csv = requests.get(f"{base}/datasets/{DATASET}/collections/{cid}.csv", timeout=30)
        out[cid]["csv"] = (csv.status_code, csv.content)
    return out


def test_two_servers_with_empty_data_dirs_serve_one_database(tmp_path, monkeypatch):
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)   # the servers' and the harvest's
    web_a, web_b, harvester = tmp_path / "web-a", tmp_path / "web-b", tmp_path / "harvester"
    for d in (web_a, web_b, harvester):
        d.mkdir()
    harvest(harvester, _sources(tmp_path / "src", with_file=False))   # the schema exists
    with renkei_serve(web_a, workers=1) as (a, _), renkei_serve(web_b, workers=1) as (b, _):
        assert _view(a)["collections"] == _view(b)["collections"] == []

        harvest(harvester, _sources(tmp_path / "src", with_file=True))
        seen_a, seen_b = _view(a), _view(b)
        assert seen_a == seen_b
        assert len(seen_a["collections"]) == 1 and seen_a["search"] == [DATASET]
        cid = seen_a["collections"][0]
        assert seen_a[cid]["status"] == 200 and seen_a[cid]["matched"] == 40
        assert [f["id"] for f in seen_a[cid]["features"]] == list(range(11, 26))
        assert seen_a[cid]["item"]["properties"]["地点"] == "共有地点11"
        status, body = seen_a[cid]["csv"]
        assert status == 200 and body.decode("utf-8-sig").count("共有地点") == 40

        harvest(harvester, _sources(tmp_path / "src", with_file=False))   # withdrawn
        gone_a, gone_b = _view(a), _view(b)
        assert gone_a == gone_b == {"collections": [], "search": []}
        for base in (a, b):
            assert requests.get(f"{base}/ogcapi/collections/{cid}/items?f=json",
                                timeout=30).status_code == 404
            assert requests.get(f"{base}/datasets/{DATASET}/collections/{cid}.csv",
                                timeout=30).status_code == 404
    for d in (web_a, web_b):   # nothing published lives on a web server's disk
        assert not [p for p in d.rglob("*") if p.suffix in (".gpkg", ".db", ".mbtiles")]
