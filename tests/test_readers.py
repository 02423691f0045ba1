"""geo.readers on the real sample files in tests/data and on files generated from them.

Generated fixtures use real coordinates and attributes from the samples, written with
geopandas/pyogrio/pyproj into tmp_path; nothing touches the network.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import Point

from geo.readers import Layer, ReadError, RowIssue, detect_format, read_resource
from tests.servers import TEST_DATA

DATA = TEST_DATA
CSV = DATA / "csv"
AED = CSV / "yaizu_222127_aed.csv"
SJIS = CSV / "localgovjp-sjis.csv"
WLAN = CSV / "yaizu_222127_public_wireless_lan.csv"
GSI = DATA / "geojson" / "gsi_evacuation_282103.json"
P23 = DATA / "ksj" / "P23-12_38_GML.zip"
A30 = DATA / "ksj" / "A30a5-11_4939-jgd_GML.zip"
XLSX = CSV / "takamatsu_evacuation_space_data.xlsx"
KAKOGAWA = DATA / "json" / "kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json"

pytestmark = [
    # noise from writing Japanese field names into fixture shapefiles
    pytest.mark.filterwarnings("ignore:Column names longer than 10:UserWarning"),
    pytest.mark.filterwarnings("ignore:Could not decode error message:RuntimeWarning"),
]

TOKYO_PRJ = ('GEOGCS["GCS_Tokyo",DATUM["D_Tokyo",SPHEROID["Bessel_1841",6377397.155,'
             '299.1528128]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]')


def only(layers: list[Layer]) -> Layer:
    assert len(layers) == 1, [lay.name for lay in layers]
    return layers[0]


def aed_lines() -> list[bytes]:
    return AED.read_bytes().split(b"\r\n")


def write_csv(tmp_path, lines, name="t.csv", enc="utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes("\r\n".join(lines).encode(enc) + b"\r\n")
    return p


def gsi_frame(n=None) -> gpd.GeoDataFrame:
    g = gpd.read_file(GSI)
    return g if n is None else g.head(n)


def zip_dir(src: Path, dest: Path, prefix="") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, prefix + f.name)
    return dest


# ------------------------------------------------------------------------------------- CSV

def test_csv_utf8_crlf_keeps_codes_as_text():
    lay = only(read_resource(AED, "CSV"))
    assert lay.spatial and lay.encoding == "utf-8" and lay.rows_in == 82 and not lay.rejected
    assert lay.crs_source == "EPSG:4326 (CSV 緯度/経度 columns)"
    df = lay.frame
    assert isinstance(df, gpd.GeoDataFrame) and df.crs.to_epsg() == 4326 and len(df) == 82
    assert df["NO"].iloc[0] == "0000000001"
    assert df["都道府県コード又は市区町村コード"].iloc[0] == "222127"
    assert df["名称"].iloc[0] == "市役所本館"
    p = df.geometry.iloc[0]
    assert (p.x, p.y) == (138.323171, 34.866918)           # x = lon
    assert df["方書"].isna().iloc[0]                          # empty stays missing, not ""


def test_csv_cp932_lat_lng():
    lay = only(read_resource(SJIS))
    assert lay.encoding == "cp932" and lay.rows_in == 1916 and len(lay.frame) == 1916
    assert list(lay.frame.columns[:5]) == ["pid", "pref", "cid", "city", "citykana"]
    kakogawa = lay.frame[lay.frame["cid"] == "28210"].iloc[0]
    assert kakogawa["city"] == "加古川市" and kakogawa["pref"] == "兵庫県"
    assert 134.8 < kakogawa.geometry.x < 134.9 and 34.7 < kakogawa.geometry.y < 34.8


def test_csv_lf_line_endings():
    assert b"\r\n" not in WLAN.read_bytes()
    lay = only(read_resource(WLAN))
    assert lay.rows_in == 17 and len(lay.frame) == 17 and lay.encoding == "utf-8"
    assert lay.frame["SSID"].iloc[0] == "DoSPOT-FREE"
    assert lay.frame["NO"].iloc[0] == "1000000004"


def test_csv_utf8_bom(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + AED.read_bytes())
    lay = only(read_resource(p))
    assert lay.encoding == "utf-8-sig" and len(lay.frame) == 82
    assert lay.frame.columns[0] == "都道府県コード又は市区町村コード"


def test_csv_rows_with_bad_coordinates_are_rejected_with_row_numbers(tmp_path):
    rows = [line.decode().split(",") for line in aed_lines()[:5]]
    assert rows[0][8:10] == ["緯度", "経度"]
    rows[2][8] = "abc"                                       # data row 2
    rows[4][8:10] = ["", " "]                                # data row 4
    lines = [",".join(r) for r in rows]
    lay = only(read_resource(write_csv(tmp_path, lines)))
    assert lay.rows_in == 4 and len(lay.frame) == 2
    assert [r.row for r in lay.rejected] == [2, 4]
    assert "数値ではありません" in lay.rejected[0].reason and "'abc'" in lay.rejected[0].reason
    assert "緯度" in lay.rejected[0].reason
    assert "空" in lay.rejected[1].reason
    assert list(lay.frame["NO"]) == ["0000000001", "0000000003"]


def test_csv_all_coordinates_bad_is_a_read_error(tmp_path):
    lines = ["名称,緯度,経度", "市役所,北緯34度,東経138度", "図書館,,"]
    with pytest.raises(ReadError) as e:
        read_resource(write_csv(tmp_path, lines))
    assert e.value.row == 1 and "北緯34度" in str(e.value)


def test_csv_projected_metres_are_not_degrees(tmp_path):
    lines = ["名称,Y座標,X座標", "A,-137235.66,46223.46", "B,-137000.1,46000.2"]
    with pytest.raises(ReadError, match="投影座標"):
        read_resource(write_csv(tmp_path, lines))


def test_csv_undecodable_bytes(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes("名称,緯度,経度\n市役所,34.8,138.3\n".encode("cp932") + b"\x82\xff,1,2\n")
    with pytest.raises(ReadError) as e:
        read_resource(p, "CSV")
    assert "バイト目" in str(e.value) and "3 行目" in str(e.value) and e.value.row == 2


def test_csv_without_coordinates_is_a_table(tmp_path):
    df = pd.read_csv(AED, dtype=str).drop(columns=["緯度", "経度"])
    p = tmp_path / "table.csv"
    df.to_csv(p, index=False)
    lay = only(read_resource(p))
    assert not lay.spatial and lay.crs_source is None
    assert type(lay.frame) is pd.DataFrame and len(lay.frame) == 82
    assert lay.frame["NO"].iloc[0] == "0000000001"


def test_csv_column_names_cleaned(tmp_path):
    lines = ["\ufeff 名称 ,名称,,緯度,経度,geometry,Name,name", "A,B,C,34.7,134.8,POINT(0 0),x,y"]
    lay = only(read_resource(write_csv(tmp_path, lines)))
    assert list(lay.frame.columns) == ["名称", "名称_2", "column_3", "緯度", "経度", "geometry_2",
                                       "Name", "name_2", "geometry"]
    assert lay.frame["geometry_2"].iloc[0] == "POINT(0 0)"


@pytest.mark.parametrize("lat,lon", [("緯度", "経度"), ("ｌａｔ", "ｌｏｎ"), ("Latitude", "Longitude"),
                                     ("LAT", "LNG"), ("y", "x"), ("Y座標", "X座標"), ("北緯", "東経"),
                                     ("緯度（世界測地系）", "経度（世界測地系）")])
def test_csv_coordinate_columns_found_by_name(tmp_path, lat, lon):
    lines = [f"{lon},名称,{lat}", "134.83827,県立加古川東高等学校,34.761888"]
    lay = only(read_resource(write_csv(tmp_path, lines)))
    assert lay.spatial and lay.frame.geometry.iloc[0].equals(Point(134.83827, 34.761888))


def test_csv_full_width_digits_and_swapped_columns(tmp_path):
    lines = ["名称,緯度,経度", "A,１３４．８３８２７,３４．７６１８８８", "B,134.82078,34.76062"]
    lay = only(read_resource(write_csv(tmp_path, lines)))
    assert any("入れ替" in w for w in lay.warnings)
    assert lay.frame.geometry.iloc[0].equals(Point(134.83827, 34.761888))


def test_csv_row_with_extra_fields_is_rejected(tmp_path):
    lines = ["名称,緯度,経度", "A,34.7,134.8", "B,34.7,134.8,extra", "", "C,34.8,134.9"]
    lay = only(read_resource(write_csv(tmp_path, lines)))
    assert list(lay.frame["名称"]) == ["A", "C"]
    assert [r.row for r in lay.rejected] == [2] and "列数" in lay.rejected[0].reason


def test_csv_100k_rows_is_fast(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"NO": [f"{i:010d}" for i in range(n)], "名称": "施設",
                       "緯度": rng.uniform(34.2, 35.6, n).round(6).astype(str),
                       "経度": rng.uniform(134.3, 135.4, n).round(6).astype(str)})
    df.loc[7, "緯度"] = "不明"
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False, encoding="cp932")
    t = time.perf_counter()
    lay = only(read_resource(p))
    elapsed = time.perf_counter() - t
    assert len(lay.frame) == n - 1 and lay.rejected == [RowIssue(8, lay.rejected[0].reason)]
    assert elapsed < 5, elapsed


# --------------------------------------------------------------------------------- GeoJSON

def test_geojson_real_gsi_file():
    lay = only(read_resource(GSI, "GeoJSON"))
    assert lay.name == "gsi_evacuation_282103" and lay.rows_in == 72 and len(lay.frame) == 72
    assert lay.encoding == "utf-8" and lay.frame.crs.to_epsg() == 4326
    assert lay.frame.geometry.iloc[0].equals(Point(134.83827, 34.761888))
    assert lay.frame["施設・場所名"].iloc[0] == "県立加古川東高等学校"


def _with_crs_member(tmp_path, epsg, urn, transform=True) -> tuple[Path, dict]:
    src = json.loads(GSI.read_text(encoding="utf-8"))
    if transform:
        t = Transformer.from_crs(4326, epsg, always_xy=True)
        for f in src["features"]:
            f["geometry"]["coordinates"] = list(t.transform(*f["geometry"]["coordinates"]))
    src["crs"] = {"type": "name", "properties": {"name": urn}}
    p = tmp_path / f"z{epsg}.geojson"
    p.write_text(json.dumps(src, ensure_ascii=False), encoding="utf-8")
    return p, src


def test_geojson_legacy_crs_member_plane_rectangular_zone_v(tmp_path):
    # GDAL honours the legacy crs member itself (checked: pyogrio reports EPSG:6673), so the
    # reader only has to reproject and say where the CRS came from.
    p, src = _with_crs_member(tmp_path, 6673, "urn:ogc:def:crs:EPSG::6673")
    e, n = src["features"][0]["geometry"]["coordinates"]
    assert -150_000 < n < -120_000 and 40_000 < e < 50_000          # Kakogawa in zone V
    lay = only(read_resource(p))
    assert lay.crs_source == "EPSG:6673 (GeoJSON crs member)"
    back = Transformer.from_crs(6673, 4326, always_xy=True).transform(e, n)
    pt = lay.frame.geometry.iloc[0]
    assert pt.x == pytest.approx(back[0], abs=1e-9) and pt.y == pytest.approx(back[1], abs=1e-9)
    assert pt.x == pytest.approx(134.83827, abs=1e-7) and pt.y == pytest.approx(34.761888, abs=1e-7)


def test_geojson_crs_member_jgd2011_stays_lon_lat(tmp_path):
    p, _ = _with_crs_member(tmp_path, 6668, "urn:ogc:def:crs:EPSG::6668", transform=False)
    lay = only(read_resource(p))
    assert lay.crs_source == "EPSG:6668 (GeoJSON crs member)"
    pt = lay.frame.geometry.iloc[0]
    assert pt.x == pytest.approx(134.83827, abs=1e-7) and pt.y == pytest.approx(34.761888, abs=1e-7)


def test_geojson_metres_without_crs_member_is_rejected(tmp_path):
    p, src = _with_crs_member(tmp_path, 6673, "x")
    del src["crs"]
    p.write_text(json.dumps(src), encoding="utf-8")
    with pytest.raises(ReadError, match="範囲外"):
        read_resource(p)


def test_geojson_empty_invalid_and_nested_properties(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[134.8, 34.7], [134.9, 34.8], [134.9, 34.7],
                                                  [134.8, 34.8], [134.8, 34.7]]]}
    feats = [
        {"geometry": {"type": "Point", "coordinates": [134.83827, 34.761888]},
         "properties": {"名称": "A", "tags": ["避難所", "学校"], "extra": {"階": 2}, "収容": 1.5}},
        {"geometry": None, "properties": {"名称": "B", "tags": [], "extra": {}, "収容": None}},
        {"geometry": bowtie, "properties": {"名称": "C", "tags": ["x"], "extra": None, "収容": 3}},
    ]
    p = tmp_path / "mixed.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        dict(type="Feature", **f) for f in feats]}, ensure_ascii=False), encoding="utf-8")
    lay = only(read_resource(p))
    assert lay.rows_in == 3 and [r.row for r in lay.rejected] == [2]
    assert "空" in lay.rejected[0].reason
    df = lay.frame
    assert list(df["名称"]) == ["A", "C"]
    assert json.loads(df["tags"].iloc[0]) == ["避難所", "学校"]
    assert json.loads(df["extra"].iloc[0]) == {"階": 2} and pd.isna(df["extra"].iloc[1])
    assert df.geometry.iloc[1].is_valid and df.geometry.iloc[1].geom_type == "MultiPolygon"
    assert any("1 件" in w and "make_valid" in w for w in lay.warnings)
    pyogrio.write_dataframe(df, tmp_path / "out.gpkg")     # what the feature store will do


def test_geojson_in_cp932_is_transcoded(tmp_path):
    p = tmp_path / "sjis.geojson"
    p.write_bytes(GSI.read_text(encoding="utf-8").encode("cp932"))
    lay = only(read_resource(p))
    assert lay.encoding == "cp932" and lay.frame["施設・場所名"].iloc[0] == "県立加古川東高等学校"


# ------------------------------------------------------------------------------ Shapefiles

def test_ksj_p23_two_shapefiles_cp932_jgd2000():
    layers = read_resource(P23, "ZIP")
    assert [lay.name for lay in layers] == ["P23a-12_38", "P23b-12_38"]
    a, b = layers
    assert (a.rows_in, len(a.frame), b.rows_in, len(b.frame)) == (805, 805, 1018, 1018)
    for lay in layers:
        assert lay.encoding == "cp932" and lay.crs_source == "EPSG:4612 (.prj)"
        assert lay.frame.crs.to_epsg() == 4326
        minx, miny, maxx, maxy = lay.frame.total_bounds      # 愛媛県
        assert 132 < minx < maxx < 134 and 32.5 < miny < maxy < 34.5
    assert a.frame["P23a_002"].iloc[0] == "水産庁" and a.frame["P23a_003"].iloc[0] == "愛南町長"
    assert set(b.frame.geometry.geom_type) <= {"LineString", "MultiLineString"}
    # the DBF declares 0 decimals but stores '4.500'; GDAL alone would give 4
    assert a.frame["P23a_012"].iloc[0] == 4.5 and a.frame["P23a_011"].iloc[0] == 50.0
    assert any("P23a_012" in w for w in a.warnings)


def test_ksj_a30_no_prj_uses_gml_datum_and_says_assumed():
    lay = only(read_resource(A30))
    assert lay.name == "A30a5-11_4939_SedimentDisasterAndSnowslide"
    assert "assumed" in lay.crs_source and "EPSG:4612" in lay.crs_source
    assert "JGD2000 / (B, L)" in lay.crs_source and any(".prj" in w for w in lay.warnings)
    assert lay.encoding == "cp932"
    row = lay.frame.iloc[0]
    assert row["A30a5_002"] == "八丈町" and row["A30a5_004"] == "がけ崩れ"
    assert row.geometry.bounds == pytest.approx((139.8125, 33.08333333, 139.875, 33.125))


def _shapefile(tmp_path, gdf, name="layer", **kw) -> Path:
    d = tmp_path / name
    d.mkdir()
    gdf.to_file(d / f"{name}.shp", **kw)
    return d


def test_shapefile_without_prj_or_gml_assumes_jgd2011(tmp_path):
    d = _shapefile(tmp_path, gsi_frame(5)[["NO", "geometry"]])
    (d / "layer.prj").unlink()
    lay = only(read_resource(zip_dir(d, tmp_path / "noprj.zip")))
    assert lay.crs_source.startswith("EPSG:6668 assumed: no .prj")
    assert any("EPSG:6668" in w for w in lay.warnings) and len(lay.frame) == 5


def test_shapefile_without_prj_in_metres_is_refused(tmp_path):
    d = _shapefile(tmp_path, gsi_frame(5)[["NO", "geometry"]].to_crs(6673))
    (d / "layer.prj").unlink()
    with pytest.raises(ReadError, match="CRS"):
        read_resource(zip_dir(d, tmp_path / "noprj_m.zip"))


def test_shapefile_tokyo_datum_prj_is_honoured(tmp_path):
    g = gsi_frame(5)[["NO", "施設・場所名", "geometry"]]
    d = _shapefile(tmp_path, g, encoding="utf-8")
    (d / "layer.prj").write_text(TOKYO_PRJ)       # same numbers, now declared 旧日本測地系
    lay = only(read_resource(zip_dir(d, tmp_path / "tky.zip", prefix="data/")))
    assert lay.crs_source == "EPSG:4301 (.prj)" and lay.encoding == "utf-8"
    # GDAL cut the UTF-8 name 施設・場所名 at 10 bytes, inside 場; pyogrio alone cannot read it
    with pytest.raises(UnicodeDecodeError):
        pyogrio.read_dataframe(d / "layer.shp")
    assert "施設・" in lay.frame.columns and lay.frame["施設・"].iloc[0] == "県立加古川東高等学校"
    t = Transformer.from_crs(4301, 4326, always_xy=True)
    geod = Geod(ellps="WGS84")
    for src, out in zip(g.geometry, lay.frame.geometry):
        assert (out.x, out.y) == pytest.approx(t.transform(src.x, src.y), abs=1e-9)
        dist = geod.inv(src.x, src.y, out.x, out.y)[2]
        assert 400 < dist < 500, dist                       # reference: Kobe 441.5 m
        assert out.x < src.x and out.y > src.y              # Δlon −, Δlat + in Hyogo


@pytest.mark.parametrize("cpg", [None, "UTF-8"])
def test_cp932_dbf_without_ldid_and_with_missing_or_wrong_cpg(tmp_path, cpg):
    d = _shapefile(tmp_path, gsi_frame(3), encoding="cp932")
    dbf = bytearray((d / "layer.dbf").read_bytes())
    dbf[29] = 0                                             # no language driver id
    (d / "layer.dbf").write_bytes(dbf)
    (d / "layer.cpg").unlink()
    if cpg:
        (d / "layer.cpg").write_text(cpg)
    # What GDAL/pyogrio do on their own: Latin-1 mojibake (no .cpg) or a decode error.
    try:
        gdal_default = pyogrio.read_dataframe(d / "layer.shp").astype(str).to_numpy().ravel()
    except UnicodeDecodeError:
        gdal_default = []
    assert "県立加古川東高等学校" not in gdal_default
    lay = only(read_resource(zip_dir(d, tmp_path / "sjis.zip")))
    assert lay.encoding == "cp932"
    assert "県立加古川東高等学校" in set(lay.frame.iloc[0])
    assert "都道府県名" in lay.frame.columns                  # field names decoded too
    assert bool(cpg) == any(".cpg" in w for w in lay.warnings)


def test_corrupt_zip_is_a_read_error(tmp_path):
    p = tmp_path / "truncated.zip"
    p.write_bytes(P23.read_bytes()[:300_000])
    assert detect_format(p, "ZIP") == "shapefile-zip"
    with pytest.raises(ReadError, match="zip"):
        read_resource(p, "ZIP")


def test_damaged_zip_member_is_a_read_error(tmp_path):
    # GDAL's /vsizip/ would return 630 of 1018 features plus garbage here, without an error.
    data = bytearray(P23.read_bytes())
    info = zipfile.ZipFile(P23).getinfo("P23-12_38_GML/P23b-12_38.shp")
    mid = info.header_offset + 60 + info.compress_size // 2
    data[mid:mid + 50] = bytes(50)
    p = tmp_path / "damaged.zip"
    p.write_bytes(data)
    with pytest.raises(ReadError, match="CRC"):
        read_resource(p, "ZIP")


@pytest.mark.parametrize("field, value, message", [
    ("compress_type", 9, "圧縮方式 \\(9\\)"),    # Deflate64, as Windows makes past 2 GB
    ("compress_type", 99, "圧縮方式 \\(99\\)"),  # WinZip AES
    ("flag_bits", 0x1, "暗号化"),
    ("flag_bits", 0x40, "暗号化"),
])
def test_a_zip_member_zipfile_cannot_open_is_one_read_error(tmp_path, field, value, message):
    """zipfile answers these with NotImplementedError or RuntimeError (found by the reader
    fuzz run, a compression method byte flipped): the read names the member instead."""
    import struct
    p = tmp_path / "odd.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("shelters.csv", "名称,緯度,経度\n加古川駅,34.7565,134.8414\n")
    data = bytearray(p.read_bytes())
    info = zipfile.ZipFile(p).getinfo("shelters.csv")
    central = data.rindex(b"PK\x01\x02")
    if field == "compress_type":   # local header offset 8, central directory offset 10
        struct.pack_into("<H", data, info.header_offset + 8, value)
        struct.pack_into("<H", data, central + 10, value)
    else:                          # local header offset 6, central directory offset 8
        struct.pack_into("<H", data, info.header_offset + 6, value)
        struct.pack_into("<H", data, central + 8, value)
    p.write_bytes(data)
    for declared in ("ZIP", "CSV", None):
        with pytest.raises(ReadError, match=message):
            read_resource(p, declared)


def test_zip_of_geojson_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "A33-25_28_GEOJSON.zip", "w") as zf:
        zf.write(GSI, "A33-25_28_GEOJSON/shelters.geojson")
        zf.writestr("A33-25_28_GEOJSON/KS-META.xml", "<x/>")
    p = tmp_path / "A33-25_28_GEOJSON.zip"
    assert detect_format(p, "ZIP") == "zip"
    lay = only(read_resource(p))
    assert lay.name == "shelters" and len(lay.frame) == 72


# ----------------------------------------------------------------------- KML, GPKG, others

def test_kml(tmp_path):
    assert "LIBKML" in pyogrio.list_drivers() or "KML" in pyogrio.list_drivers()
    p = tmp_path / "shelters.kml"
    gsi_frame(10).to_file(p, driver="KML")
    lay = only(read_resource(p, "KML"))
    assert lay.spatial and len(lay.frame) == 10 and lay.crs_source == "EPSG:4326 (KML)"
    assert lay.frame["施設・場所名"].iloc[0] == "県立加古川東高等学校"
    assert not {"tessellate", "extrude", "visibility", "icon"} & set(lay.frame.columns)
    pt = lay.frame.geometry.iloc[0]
    assert (pt.x, pt.y) == pytest.approx((134.83827, 34.761888))


def test_kmz(tmp_path):
    kml = tmp_path / "doc.kml"
    gsi_frame(3).to_file(kml, driver="KML")
    p = tmp_path / "download"                        # cache files need not have a suffix
    with zipfile.ZipFile(p, "w") as zf:
        zf.write(kml, "doc.kml")
    assert detect_format(p, "KMZ") == "kml"
    lay = only(read_resource(p))
    assert len(lay.frame) == 3 and lay.frame["施設・場所名"].iloc[2] == gsi_frame(3)["施設・場所名"].iloc[2]


def test_gpkg_all_layers_reprojected(tmp_path):
    p = tmp_path / "multi.gpkg"
    g = gsi_frame()
    g.to_crs(6673).to_file(p, layer="zone5")
    g.head(4).to_file(p, layer="wgs84")
    pyogrio.write_dataframe(pd.DataFrame({"code": ["0001", "0002"]}), p, layer="codes")
    layers = {lay.name: lay for lay in read_resource(p, "GPKG")}
    assert set(layers) == {"zone5", "wgs84", "codes"}
    z = layers["zone5"]
    assert z.crs_source == "EPSG:6673 (GeoPackage SRS)" and z.frame.crs.to_epsg() == 4326
    assert np.allclose(shapely.get_coordinates(z.frame.geometry.values),
                       shapely.get_coordinates(g.geometry.values), atol=1e-8)
    assert len(layers["wgs84"].frame) == 4
    assert not layers["codes"].spatial and list(layers["codes"].frame["code"]) == ["0001", "0002"]


def test_xlsx_sheet_with_latitude_longitude():
    lay = only(read_resource(XLSX))
    assert lay.name == "Sheet1" and lay.spatial and len(lay.frame) == 195
    assert "latitude/longitude" in lay.crs_source
    first = lay.frame.iloc[0]
    assert first["name"] == "日新小学校跡施設" and first["#property"] == "1"
    assert (first.geometry.x, first.geometry.y) == pytest.approx((134.0300392, 34.34753333))


def test_json_records_with_string_coordinates():
    lay = only(read_resource(KAKOGAWA, "JSON"))
    assert lay.spatial and len(lay.frame) == 68
    assert lay.crs_source == "EPSG:4326 (JSON lat/lng columns)"
    assert lay.frame["名称"].iloc[0] == "加古川公民館"
    assert lay.frame.geometry.iloc[0].x == pytest.approx(134.832959190775)


@pytest.mark.parametrize("path,declared,expected", [
    (AED, "GeoJSON", "csv"), (SJIS, None, "csv"), (GSI, "CSV", "geojson"),
    (P23, "CSV", "shapefile-zip"),
    (A30, None, "shapefile-zip"), (XLSX, "CSV", "xlsx"), (KAKOGAWA, "GeoJSON", "json"),
    (DATA / "fiware" / "datamodels_jp_EvacuationSite_example.json", None, "json"),
    (DATA / "fiware" / "nec_cio_01_aed_model.yaml", None, None),
])
def test_detect_format_trusts_content_over_label(path, declared, expected):
    assert detect_format(path, declared) == expected


def test_html_error_page_and_ngsi_json_are_read_errors(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ReadError, match="HTML"):
        read_resource(p, "CSV")
    with pytest.raises(ReadError, match="JSON"):
        read_resource(DATA / "fiware" / "datamodels_jp_EvacuationSite_example.json", "JSON")
