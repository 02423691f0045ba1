"""Downloads of translated data and the dataset page's previews, on the harvested demo data
(`python -m catalog.cli harvest --config examples/sources.yaml`), served on 127.0.0.1."""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pyogrio
import pytest
import requests

from tests import published
from tests.servers import REPO, live_server

KAKOGAWA = "kakogawa-files--shiteikinkyuhinanbasyo"


def harvest_demo(data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(REPO / "catalog" / "examples" / "sources.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(base URL, store) of the catalogue app on a freshly harvested demo data dir."""
    from catalog.app import create_app
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    harvest_demo(data_dir)
    app = create_app(data_dir)
    with live_server(app) as url:
        yield url, app.extensions["renkei_store"]


def collection_of(store, dataset_id: str):
    with store.session() as s:
        from store.db import Dataset
        ds = s.get(Dataset, dataset_id)
        col = ds.collections[0]
        return col.id, col.title, col.feature_count, col.path


def test_geojson_download_streams_every_feature(demo):
    base, store = demo
    cid, title, count, path = collection_of(store, KAKOGAWA)
    r = requests.get(f"{base}/datasets/{KAKOGAWA}/collections/{cid}.geojson", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/geo+json"
    cd = r.headers["Content-Disposition"]
    assert cd.startswith("attachment; filename=\"") and cd.isascii()
    assert f"filename*=UTF-8''{quote(title + '.geojson', safe='')}" in cd
    doc = r.json()
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == count > 0
    source = published.frame(store.data_dir, path)
    first = doc["features"][0]
    assert first["geometry"]["type"] == "Point"
    assert set(first["properties"]) == set(source.columns) - {"geometry"}
    # GDAL reads what we stream.
    assert len(pyogrio.read_dataframe(io.BytesIO(r.content))) == count


def test_csv_download_has_bom_and_coordinates(demo):
    base, store = demo
    cid, title, count, path = collection_of(store, KAKOGAWA)
    r = requests.get(f"{base}/datasets/{KAKOGAWA}/collections/{cid}.csv", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.content.startswith(b"\xef\xbb\xbf")  # Excel in Japan needs the BOM for UTF-8
    assert f"filename*=UTF-8''{quote(title + '.csv', safe='')}" in r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == count + 1
    header = rows[0]
    source = published.frame(store.data_dir, path)
    taken = {"経度", "緯度"} & set(source.columns)  # a layer may carry its own 緯度/経度
    assert header[-2:] == (["経度_WGS84", "緯度_WGS84"] if taken else ["経度", "緯度"])
    lon, lat = float(rows[1][-2]), float(rows[1][-1])
    assert (lon, lat) == pytest.approx((source.geometry.iloc[0].x, source.geometry.iloc[0].y))
    name_col = next(c for c in source.columns if c in ("name", "名称"))
    assert rows[1][header.index(name_col)] == source[name_col].iloc[0]


def test_geopackage_download(demo, tmp_path):
    base, store = demo
    cid, title, count, _ = collection_of(store, KAKOGAWA)
    r = requests.get(f"{base}/datasets/{KAKOGAWA}/collections/{cid}.gpkg", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/geopackage+sqlite3"
    assert r.content.startswith(b"SQLite format 3\x00")
    assert ".gpkg" in r.headers["Content-Disposition"]
    (tmp_path / "x.gpkg").write_bytes(r.content)
    assert len(pyogrio.read_dataframe(tmp_path / "x.gpkg")) == count


def test_download_of_unknown_or_foreign_collection_is_404(demo):
    base, store = demo
    cid, *_ = collection_of(store, KAKOGAWA)
    other = "gsi-shelters--emergency-282103"
    assert requests.get(f"{base}/datasets/{other}/collections/{cid}.csv", timeout=10).status_code == 404
    assert requests.get(f"{base}/datasets/{KAKOGAWA}/collections/nope.csv", timeout=10).status_code == 404
    assert requests.get(f"{base}/datasets/{KAKOGAWA}/collections/{cid}.shp", timeout=10).status_code == 404


def test_dataset_page_map_table_and_links(demo):
    base, store = demo
    cid, title, count, path = collection_of(store, KAKOGAWA)
    html = requests.get(f"{base}/datasets/{KAKOGAWA}", timeout=10).text
    # Map: Leaflet from our own /static/leaflet/, features from our own OGC API.
    assert '<script src="/static/leaflet/leaflet.js"></script>' in html
    items = re.search(r'data-items="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert items == f"/ogcapi/collections/{cid}/items?f=json&limit=1000"
    fc = requests.get(base + items, timeout=10).json()
    assert len(fc["features"]) == count
    assert 'data-basemap="none"' in html and "cyberjapandata" not in html
    js = requests.get(base + "/static/leaflet/leaflet.js", timeout=10)
    assert js.status_code == 200 and "Leaflet" in js.text[:2000]
    assert requests.get(base + "/static/map.js", timeout=10).status_code == 200
    # Attribute table: first 20 rows from the GeoPackage, paged on the server.
    source = published.frame(store.data_dir, path).drop(columns="geometry")
    first = str(source.iloc[0, 1])
    assert f"<td>{first}</td>" in html
    assert f"1〜20行目（全{count}行）" in html and 'href="?table_page=2#table"' in html
    page2 = requests.get(f"{base}/datasets/{KAKOGAWA}", params={"table_page": 2}, timeout=10).text
    assert f"21〜40行目（全{count}行）" in page2 and f"<td>{source.iloc[20, 1]}</td>" in page2
    # Downloads, machine links, quality report, JSON-LD distributions.
    for ext in ("geojson", "csv", "gpkg"):
        assert f'href="/datasets/{KAKOGAWA}/collections/{cid}.{ext}"' in html
    assert f'href="/ogcapi/collections/{cid}"' in html
    assert f'href="/api/3/action/package_show?id={KAKOGAWA}"' in html and 'href="/api"' in html
    assert "取り込み結果（品質レポート）" in html and "<dt>読み込んだ行数</dt>" in html
    ld = json.loads(re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S).group(1))
    urls = [d["contentUrl"] for d in ld["distribution"]]
    assert any(u.endswith(f"/datasets/{KAKOGAWA}/collections/{cid}.csv") for u in urls)
    assert ld["spatialCoverage"]["geo"]["box"].startswith("34.7")
    assert "西端 134.8084" in html  # spatial extent


def test_gsi_basemap_when_configured(tmp_path):
    from catalog.app import create_app
    harvest_demo(tmp_path / "data")
    app = create_app(tmp_path / "data", config={"RENKEI_BASEMAP": "gsi"})
    html = app.test_client().get(f"/datasets/{KAKOGAWA}").get_data(as_text=True)
    assert 'data-basemap="gsi"' in html
    js = app.test_client().get("/static/map.js").get_data(as_text=True)
    assert "cyberjapandata.gsi.go.jp/xyz/pale" in js and "地理院タイル" in js
