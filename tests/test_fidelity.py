"""Nothing lost in translation, and the OGC API as standard clients read it (issue 16): real
files harvested by `renkei harvest`, served by the app on 127.0.0.1, read back with GDAL's OAPIF
driver (pyogrio, in a subprocess: it holds the GIL while it downloads), OWSLib and requests."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager

import geopandas as gpd
import pyogrio
import pytest
import requests
from flask import request as flask_request
from owslib.ogcapi.features import Features
from werkzeug.serving import make_server

from catalog.app import create_app
from geo import themes
from geo.readers import read_resource
from geo.translate import publisher_of, translate
from store.db import Collection, Dataset, Organization, Store
from tests import published
from tests.servers import REPO, TEST_DATA

KAKOGAWA = TEST_DATA / "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json"
GSI_KASAI = TEST_DATA / "geojson/gsi_evacuation_282201.json"
GSI_KAKOGAWA = TEST_DATA / "geojson/gsi_emergency_282103.json"

SOURCES = """\
sources:
  - name: gsi-shelters
    type: files
    organization: hyogo-pref
    files:
      - id: emergency-282103
        title: 加古川市 指定緊急避難場所（国土地理院）
        url: gsi_emergency_282103.json
        organization: kakogawa-city
        license: cc-by-4.0
  - name: kakogawa-files
    type: files
    organization: kakogawa-city
    files:
      - id: shelters
        title: 加古川市 指定緊急避難場所兼指定避難所
        url: kakogawa.json
        license: cc-by-4.0
  - name: kasai-files
    type: files
    organization: kasai
    files:
      - id: by-address
        title: 加西市 指定避難所一覧（県の防災部局が作成）
        url: kasai_address.csv
        organization: bousai
        organization_title: 防災企画課
        license: cc-by-4.0
      - id: by-organization
        title: 加西市 指定避難所一覧
        url: kasai_town.csv
        license: cc-by-4.0
"""


def kasai_csv(path, *, prefix: bool) -> int:
    """A legacy-layout table without a code column, from GSI's 加西市 list: 名称, 住所 (with or
    without 兵庫県加西市), 緯度, 経度 and two columns no theme names (市町, 種別)."""
    gsi = gpd.read_file(GSI_KASAI)
    lines = ["NO,名称,住所,緯度,経度,市町,種別"]
    for i, row in enumerate(gsi.itertuples(), 1):
        addr = row.住所 if prefix else row.住所.removeprefix("兵庫県加西市")
        lines.append(f"{i},{row._4},{addr},{row.geometry.y},{row.geometry.x},加西市,指定避難所")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(gsi)


class Site:
    def __init__(self, url, data_dir, log):
        self.url, self.data_dir, self.log = url, data_dir, log
        self.ogc = url + "/ogcapi"

    def collection(self, dataset_id: str) -> str:
        with Store(self.data_dir).session() as s:
            (col,) = s.get(Dataset, dataset_id).collections
            return col.id


@contextmanager
def serve_app(data_dir):
    """create_app on a real port (links must resolve), with a log of the paths asked for."""
    log: list[str] = []
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app(data_dir, base_url=base)
    app.before_request(lambda: log.append(flask_request.full_path))
    server.app = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, log
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fidelity")
    shutil.copy(GSI_KAKOGAWA, tmp / "gsi_emergency_282103.json")
    shutil.copy(KAKOGAWA, tmp / "kakogawa.json")
    kasai_csv(tmp / "kasai_address.csv", prefix=True)
    kasai_csv(tmp / "kasai_town.csv", prefix=False)
    (tmp / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    data = tmp / "data"
    done = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data),
                           "harvest", "--config", str(tmp / "sources.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with serve_app(data) as (url, log):
        yield Site(url, data, log)


def gdal(script: str) -> dict:
    """Run pyogrio in a subprocess; the script prints one JSON document."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={"GDAL_HTTP_TIMEOUT": "60", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 1. every source column in the dataset's own collection -----------------------------------

def test_dataset_collection_keeps_every_source_column(site):
    cid = site.collection("kakogawa-files--shelters")
    source = json.loads(KAKOGAWA.read_text(encoding="utf-8"))
    published = list(source[0])     # the columns as the city published them
    got = gdal(f"""
import json, pyogrio
df = pyogrio.read_dataframe("OAPIF:{site.ogc}/collections/{cid}")
print(json.dumps({{"columns": [c for c in df.columns if c != "geometry"], "n": len(df),
                  "stock": df["備蓄物資"].dropna().astype(str).tolist()[:3]}}, ensure_ascii=False))
""")
    theme_fields = [f.name for f in themes.SHELTER.fields]
    assert got["columns"][:len(theme_fields)] == theme_fields          # theme fields first
    assert got["columns"][len(theme_fields):] == published            # then, as published
    assert got["n"] == len(source) and got["stock"]
    # The downloads hold them too.
    base = f"{site.url}/datasets/kakogawa-files--shelters/collections/{cid}"
    geojson = requests.get(base + ".geojson", timeout=30).json()
    assert "備蓄物資" in geojson["features"][0]["properties"]
    csv_head = requests.get(base + ".csv", timeout=30).content.decode("utf-8-sig").splitlines()[0]
    assert "備蓄物資" in csv_head and "収容人数_屋外" in csv_head
    # 市町 and 種別 of the 加西市 list, in the OGC API.
    kasai = requests.get(f"{site.ogc}/collections/{site.collection('kasai-files--by-address')}"
                         "/items?limit=1&f=json", timeout=30).json()
    props = kasai["features"][0]["properties"]
    assert props["市町"] == "加西市" and props["種別"] == "指定避難所"


def test_a_source_column_named_like_a_theme_field_is_kept_beside_it():
    # Takamatsu's hospital list uses English keys: `name`, `address` … are theme fields too.
    (layer,) = read_resource(TEST_DATA / "csv/takamatsu_hospital_data.csv")
    t = translate(layer, title="病院一覧")
    assert t.theme == "medical_institution"
    cols = list(t.frame.columns)
    assert cols.count("name") == 1 and "元_name" in cols
    # the source column exactly as published (a trailing full-width space too)
    assert (t.frame["name"] == t.frame["元_name"].str.strip()).all()
    assert (t.frame["元_name"] != t.frame["name"]).sum() == 1


# -- 2. indoor and outdoor capacity ------------------------------------------------------------

def test_indoor_and_outdoor_capacity_are_summed_and_kept(site):
    cid = site.collection("kakogawa-files--shelters")
    items = requests.get(f"{site.ogc}/collections/{cid}/items?limit=200&f=json",
                         timeout=30).json()["features"]
    both = [f["properties"] for f in items
            if str(f["properties"]["収容人数_屋内"]).isdigit()
            and str(f["properties"]["収容人数_屋外"]).isdigit()]
    assert both, "the Kakogawa list has shelters with both numbers"
    for p in both:
        assert p["capacity"] == int(p["収容人数_屋内"]) + int(p["収容人数_屋外"])
        assert p["収容人数_屋内"] in p["capacity_text"] and p["収容人数_屋外"] in p["capacity_text"]
    assert "合計" in themes.SHELTER.field("capacity").description   # said in the theme


# -- 3. municipality_code from the address or the organization ---------------------------------

def test_municipality_code_from_address_and_from_organization(site):
    for dataset in ("kasai-files--by-address", "kasai-files--by-organization"):
        items = requests.get(f"{site.ogc}/collections/{site.collection(dataset)}/items"
                             "?limit=100&f=json", timeout=30).json()["features"]
        codes = {f["properties"]["municipality_code"] for f in items}
        assert codes == {"282201"}, (dataset, codes)
    with Store(site.data_dir).session() as s:
        assert s.get(Organization, "kasai").code == "282201"     # CKAN org named `kasai`
        assert s.get(Organization, "bousai").code is None         # no local government


def test_code_list_is_the_official_shape():
    from geo import lgcodes   # (new in issue 16: imported here so the rest runs on older trees)
    codes = lgcodes.all_codes()
    assert len(codes) == 47 + 1916
    hyogo = (TEST_DATA.parent.parent / "catalog/examples/hyogo_municipalities.csv")
    for line in hyogo.read_text(encoding="utf-8-sig").splitlines()[1:]:
        code, name = line.split(",")[:2]
        # (the demo list has a few wrong check digits: the first five digits are compared)
        assert lgcodes.by_name("兵庫県" + name.replace(" ", "")).code[:5] == code[:5], code
    assert lgcodes.of_organization("加西市").code == "282201"
    assert lgcodes.of_organization(None, "kasai").code == "282201"
    assert lgcodes.from_address("美方郡香美町香住区香住") .code == "285854"
    assert lgcodes.by_name("府中市") is None          # two prefectures have one
    assert publisher_of("kasai", {}, {"name": "kasai", "title": "Kasai"})[
        "municipality_code"] == "282201"


# -- 4. the merged layer: typed per theme, made by the prefecture --------------------------------

def test_merged_shelter_layer_types_and_publisher(site):
    types = published.dtypes(site.data_dir, Store(site.data_dir).session().get(
        Collection, "theme-shelter").path)
    assert types["elevation"] == "float64" and types["capacity"] == "float64"
    assert "備蓄物資" not in types                    # the theme layer keeps the theme schema
    q = requests.get(f"{site.ogc}/collections/theme-shelter/queryables?f=json",
                     timeout=30).json()["properties"]
    assert q["elevation"]["type"] == "number"
    page = requests.get(f"{site.url}/datasets/theme-shelter", timeout=30).text
    publisher = page.split("<dt>提供組織</dt>", 1)[1].split("</dd>", 1)[0]
    assert "兵庫県" in publisher and "不明" not in publisher
    assert "収集したもの" not in page and "renkei-themes" not in page


# -- 5. attribute table titles -----------------------------------------------------------------

def test_attribute_table_shows_theme_titles_with_ids(site):
    page = requests.get(f"{site.url}/datasets/kakogawa-files--shelters", timeout=30).text
    head = page.split('id="table-cap"', 1)[1].split("</thead>", 1)[0]
    assert '<abbr title="capacity">想定収容人数</abbr>' in head
    assert '<abbr title="name_kana">名称（カナ）</abbr>' in head
    assert "<th scope=\"col\">備蓄物資</th>" in head         # a source column: as published
    en = requests.get(f"{site.url}/datasets/kakogawa-files--shelters?lang=en", timeout=30).text
    assert '<abbr title="capacity">Capacity</abbr>' in en


# -- 6–9. the OGC API as clients read it --------------------------------------------------------

def test_cql2_japanese_property_names(site):
    cid = site.collection("kasai-files--by-address")
    total = requests.get(f"{site.ogc}/collections/{cid}/items?f=json&limit=1",
                         timeout=30).json()["numberMatched"]
    for flt in ("市町 = '加西市'", "\"市町\" = '加西市'", "種別 = '指定避難所' AND 市町 LIKE '加西%'"):
        r = requests.get(f"{site.ogc}/collections/{cid}/items",
                         params={"filter": flt, "f": "json"}, timeout=30)
        assert r.status_code == 200, (flt, r.text)
        assert r.json()["numberMatched"] == total, flt
    none = requests.get(f"{site.ogc}/collections/{cid}/items",
                        params={"filter": "市町 = '白浜'", "f": "json"}, timeout=30)
    assert none.json()["numberMatched"] == 0


def test_items_and_features_are_geojson(site):
    cid = site.collection("kasai-files--by-address")
    url = f"{site.ogc}/collections/{cid}/items"
    for r in (requests.get(url + "?f=json", timeout=30),
              requests.get(url, headers={"Accept": "application/geo+json"}, timeout=30),
              requests.get(url + "/1", headers={"Accept": "application/geo+json"}, timeout=30),
              requests.get(url + "/1?f=json", timeout=30)):
        assert r.status_code == 200
        assert r.headers["Content-Type"].split(";")[0] == "application/geo+json", r.url


def test_openapi_declares_filters_and_gdal_filters_on_the_server(site):
    cid = site.collection("kasai-files--by-address")
    oas = requests.get(f"{site.ogc}/openapi?f=json", timeout=60).json()
    params = oas["paths"][f"/collections/{cid}/items"]["get"]["parameters"]
    names = {(oas["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]["name"]
              if "$ref" in p and p["$ref"].startswith("#/") else p.get("name")) for p in params}
    assert {"filter", "filter-lang", "filter-crs", "sortby", "properties", "市町"} <= names
    lang = oas["components"]["parameters"]["filter-lang"]["schema"]["enum"]
    assert "cql-text" in lang and "cql2-text" in lang
    site.log.clear()
    got = gdal(f"""
import json, pyogrio
where = "\\"市町\\" = '加西市' AND \\"種別\\" = '指定避難所' AND NO IN ('1', '2', '3')"
df = pyogrio.read_dataframe("OAPIF:{site.ogc}/collections/{cid}", where=where)
print(json.dumps({{"n": len(df)}}))
""")
    assert got["n"] == 3
    asked = [p for p in site.log if "/items" in p and "filter=" in p]
    assert asked and all("filter-lang=cql-text" in p for p in asked), site.log


def test_post_items_with_cql2_json_owslib(site):
    cid = site.collection("kasai-files--by-address")
    w = Features(site.ogc)
    found = w.collection_items(cid, cql={"op": "=", "args": [{"property": "NO"}, "3"]})
    assert [f["properties"]["NO"] for f in found["features"]] == ["3"]
    bad = requests.post(f"{site.ogc}/collections/{cid}/items", json={"op": "nope"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameterValue"
    for r, status in ((requests.put(f"{site.ogc}/collections/{cid}/items", json={}, timeout=30),
                       405),
                      (requests.get(f"{site.ogc}/no/such/path", timeout=30), 404),
                      (requests.post(f"{site.ogc}/collections/{cid}/items", data="x",
                                     headers={"Content-Type": "text/plain"}, timeout=30), 415)):
        assert r.status_code == status
        assert r.headers["Content-Type"].startswith("application/json"), r.url
        assert r.json()["code"] and r.json()["description"]


# -- 10. the OGC pages are renkei's --------------------------------------------------------------

@pytest.mark.parametrize("path", ["/?f=html", "/collections?f=html", "/conformance?f=html"])
def test_ogc_html_pages_are_renkeis_in_japanese(site, path):
    html = requests.get(site.ogc + path, timeout=30).text
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<!--.*?-->", " ", html, flags=re.S)
    visible = re.sub(r"<[^>]+>", " ", text)
    assert "pygeoapi" not in visible.lower() and "pygeoapi.png" not in html
    assert "Contact" not in visible and "お問い合わせ" in visible
    assert "renkei" in visible


def test_ogc_collection_page_links_in_japanese(site):
    cid = site.collection("kasai-files--by-address")
    html = requests.get(f"{site.ogc}/collections/{cid}?f=html", timeout=30).text
    visible = re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", " ", html, flags=re.S))
    assert "Items as GeoJSON" not in visible and "地物（GeoJSON）" in visible
    assert "This document as JSON" not in visible


def test_source_columns_gpkg_cannot_store_as_they_are(tmp_path):
    """Kakogawa's real rows with the kinds of columns JSON and NGSI sources bring: numbers and
    text mixed in one column, lists/objects, a `fid` and a `Name` (case-folded clash)."""
    from geo.layers import Layer
    rows = json.loads(KAKOGAWA.read_text(encoding="utf-8"))[:3]
    frame = gpd.GeoDataFrame(
        {"名称": [r["名称"] for r in rows], "避難場所指定_洪水": [r["避難場所指定_洪水"] for r in rows],
         "収容人数": [146, "不明", None], "設備": [["毛布", "水"], {"発電機": 1}, None],
         "Name": ["a", "b", "c"], "fid": [10, 11, 12]},
        geometry=gpd.points_from_xy([float(r["lng"]) for r in rows],
                                    [float(r["lat"]) for r in rows]), crs=4326)
    t = translate(Layer("kakogawa", frame, True, None, "EPSG:4326 (file)", 3, [], []),
                  title="避難所")
    path = tmp_path / "v1.gpkg"
    pyogrio.write_dataframe(t.frame, path)
    back = pyogrio.read_dataframe(path)
    assert list(back["収容人数"][:2]) == ["146", "不明"]
    assert json.loads(back["設備"][0]) == ["毛布", "水"]
    assert list(back["元_fid"]) == [10, 11, 12] and list(back["元_Name"]) == ["a", "b", "c"]
