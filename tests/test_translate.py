"""geo.translate on the real Japanese layouts in tests/data (and variants built from them)."""
from __future__ import annotations

import json
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, Polygon

from geo import themes
from geo.readers import read_resource
from geo.translate import restore_code, restore_codes, translate
from tests.servers import TEST_DATA

CSV = TEST_DATA / "csv"


def one(path, **kw):
    (layer,) = read_resource(path)
    return translate(layer, **kw)


def by_name(frame, name):
    rows = frame[frame["name"] == name]
    assert len(rows) == 1, name
    return rows.iloc[0]


def test_yaizu_legacy_shelter_layout_with_circle_flags():
    t = one(CSV / "yaizu_222127_evacuation_space.csv", title="焼津市 指定緊急避難場所一覧")
    assert t.theme == "shelter" and "災害種別_地震" in t.theme_reason
    assert (t.rows_in, t.rows_published, t.rejected) == (31, 31, [])
    tower = by_name(t.frame, "中港タワー")
    assert tower["earthquake"] and tower["tsunami"] and not tower["flood"]
    assert tower["kind"] == themes.KIND_EMERGENCY and tower["municipality_code"] == "222127"
    assert t.fields_mapped["災害種別_崖崩れ、土石流及び地滑り"] == "landslide"
    assert t.fields_mapped["緯度"] == "geometry"
    assert {"方書", "URL", "対象となる町会・自治会"} <= set(t.fields_unmapped)
    # Every source column follows the theme fields, as published (issue 16 item 1).
    names = [f.name for f in themes.SHELTER.fields]
    assert list(t.frame.columns[:len(names)]) == names and "方書" in t.frame.columns


def test_nanao_new_layout_with_pandas_float_flags_and_free_text_capacity():
    t = one(CSV / "nanao_reference_data.csv")
    assert t.theme == "shelter"
    first = t.frame.iloc[0]
    assert first["name"] == "御祓地区コミュニティセンター"
    assert first["flood"] and not first["large_fire"] and not first["volcano"]   # 1.0 / blank
    assert first["capacity_text"] == "屋内191人／屋外0人(面積の1/2)" and pd.isna(first["capacity"])
    assert first["elevation"] == pytest.approx(2.7)
    assert first["municipality_code"] == "172022"
    assert t.fields_mapped["所在地_連結表記"] == "address"
    assert first["source_id"] == "CC0000000504" and first["source_row"] == 1


@pytest.mark.parametrize("name, theme, field, value", [
    ("yaizu_222127_aed.csv", "aed", "install_location", "２階正面入口"),
    ("yaizu_222127_public_facility-59773.csv", "public_facility", "organization", "子育て支援課"),
    ("yaizu_222127_public_toilet.csv", "public_toilet", "address", "静岡県焼津市駅北5丁目2-11"),
    ("yaizu_222127_fire_hydrant.csv", "fire_hydrant", "address", "静岡県焼津市石津728番地2"),
])
def test_standard_datasets_old_and_new_layouts(name, theme, field, value):
    t = one(CSV / name)
    assert t.theme == theme
    assert t.frame.iloc[0][field] == value
    assert (t.frame["municipality_code"] == "222127").all()


def test_toilet_flags_counts_and_aed_yes_no():
    toilet = one(CSV / "yaizu_222127_public_toilet.csv").frame.iloc[1]
    assert (toilet["male_total"], toilet["accessible_total"]) == (4, 1)
    assert toilet["wheelchair"] and toilet["baby_facilities"] and not toilet["ostomate"]
    assert one(CSV / "yaizu_222127_aed.csv").frame["pediatric"].iloc[0]


def test_takamatsu_hospital_english_keys_with_full_width_space():
    t = one(CSV / "takamatsu_hospital_data.csv")
    assert t.theme == "medical_institution"
    assert t.fields_mapped["telephone\u3000number"] == "phone"
    first = t.frame.iloc[0]
    assert (first["phone"], first["beds"], first["institution_type"]) == ("087-841-2146", 232, "病院")
    assert [(i.row, "空" in i.reason) for i in t.rejected] == [(621, True)]   # reader's, kept
    assert t.frame["source_row"].iloc[620] == 622                             # numbering kept


def test_takamatsu_xlsx_split_flood_columns_and_triangles():
    t = one(CSV / "takamatsu_evacuation_space_data.xlsx", title="高松市 指定緊急避難場所・指定避難所")
    assert t.theme == "shelter"
    assert t.fields_mapped["flood_L1"] == t.fields_mapped["flood_L2"] == "flood"
    first = by_name(t.frame, "日新小学校跡施設")
    assert first["flood"] and first["storm_surge"] and first["capacity"] == 238
    assert "洪水（flood_L2）: △" in first["note"] and "高潮: △" in first["note"]
    assert first["kind"] == themes.KIND_BOTH                       # evacuationSpace ○
    assert set(t.frame["kind"]) == {themes.KIND_BOTH, themes.KIND_EMERGENCY}
    assert not t.frame["large_fire"].all()                          # fire × → False


def test_kakogawa_json_cross_and_upper_floor_flags():
    t = one(TEST_DATA / "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json",
            title="加古川市 指定緊急避難場所兼指定避難所", publisher="加古川市",
            municipality_code="282103")
    beppu = by_name(t.frame, "別府公民館")
    assert not beppu["storm_surge"] and beppu["flood"] and beppu["note"] == "洪水: 2階以上"
    assert pd.isna(beppu["inland_flood"])       # no such column: unknown, not "no"
    assert beppu["capacity"] == 144 and "収容人数_屋外: -" in beppu["capacity_text"]
    assert (beppu["kind"], beppu["municipality_code"], beppu["publisher"]) == (
        themes.KIND_BOTH, "282103", "加古川市")


def test_gsi_geojson_one_or_blank_flags_and_code_from_common_id():
    t = one(TEST_DATA / "geojson/gsi_emergency_282103.json")
    first = t.frame.iloc[0]
    assert first["gsi_id"] == "E2821000001201" and first["municipality_code"] == "282103"
    assert first["landslide"] and not first["flood"]
    evac = one(TEST_DATA / "geojson/gsi_evacuation_282103.json").frame
    assert set(evac["kind"]) == {themes.KIND_SHELTER} and evac["flood"].isna().all()


def test_encodings_line_endings_and_column_order_do_not_matter(tmp_path):
    src = CSV / "yaizu_222127_evacuation_space.csv"
    base = one(src).frame
    text = src.read_text("utf-8")
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    shuffled = df[list(reversed(df.columns))].to_csv(index=False)
    variants = {"cp932.csv": text.encode("cp932"), "bom.csv": text.encode("utf-8-sig"),
                "lf.csv": text.replace("\r\n", "\n").encode(), "order.csv": shuffled.encode()}
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        got = one(tmp_path / name).frame
        # source columns follow the theme fields in the file's own order
        pd.testing.assert_frame_equal(got.drop(columns="geometry"),
                                      base.drop(columns="geometry"), obj=name, check_like=True)
        assert got.geometry.equals(base.geometry)


def test_swapped_latitude_longitude_columns_and_rows(tmp_path):
    rows = json.loads((TEST_DATA / "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo"
                       ".json").read_text("utf-8"))
    lines = ["名称,緯度,経度,避難場所指定_洪水"]
    for i, r in enumerate(rows):   # row 3 alone is swapped back: a per-row slip
        lat, lon = (r["lat"], r["lng"]) if i == 2 else (r["lng"], r["lat"])
        lines.append(f"{r['名称']},{lat},{lon},{r['避難場所指定_洪水']}")
    (tmp_path / "swapped.csv").write_text("\n".join(lines), "utf-8")
    (layer,) = read_resource(tmp_path / "swapped.csv")
    t = translate(layer)
    assert t.rows_published == len(rows) and not t.rejected
    assert t.frame.geometry.x.between(134.7, 135.0).all()
    assert t.frame.geometry.y.between(34.6, 34.9).all()
    assert any("入れ替わって" in w for w in layer.warnings)


def test_plane_rectangular_zone_v_and_tokyo_datum_prj(tmp_path):
    gsi = gpd.read_file(TEST_DATA / "geojson/gsi_emergency_282201.json")
    plane = json.loads(gsi.to_crs(6673).to_json())
    plane["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6673"}}
    (tmp_path / "plane.geojson").write_text(json.dumps(plane, ensure_ascii=False), "utf-8")
    t = one(tmp_path / "plane.geojson")
    assert t.theme == "shelter" and t.frame["municipality_code"].eq("282201").all()
    assert np.allclose(shapely.get_coordinates(t.frame.geometry.values),
                       shapely.get_coordinates(gsi.geometry.values), atol=1e-7)
    # Same numbers declared as Tokyo datum in the .prj: ~440 m away, never guessed.
    tokyo = gsi.set_crs(4301, allow_override=True)
    tokyo.to_file(tmp_path / "tokyo.shp", encoding="utf-8")
    with zipfile.ZipFile(tmp_path / "tokyo.zip", "w") as z:
        for ext in ("shp", "shx", "dbf", "prj", "cpg"):
            z.write(tmp_path / f"tokyo.{ext}", f"tokyo.{ext}")
    moved = one(tmp_path / "tokyo.zip")
    shift = gpd.GeoSeries(moved.frame.geometry.values, crs=4326).to_crs(6673).distance(
        gpd.GeoSeries(gsi.geometry.values, crs=4326).to_crs(6673))
    assert shift.between(400, 480).all()
    assert "4301" in (read_resource(tmp_path / "tokyo.zip")[0].crs_source or "")


def test_ksj_zip_without_prj_a30a5_stays_unmatched():
    (layer,) = read_resource(TEST_DATA / "ksj/A30a5-11_4939-jgd_GML.zip")
    t = translate(layer, title="災害履歴（土砂災害・雪崩）")
    assert t.theme is None and "一致しない" in t.theme_reason
    assert list(t.frame.columns) == list(layer.frame.columns)   # published as it is
    assert t.frame.crs.to_epsg() == 4326 and t.fields_unmapped[0] == "A30a5_001"


def test_unmatched_table_keeps_its_columns():
    t = one(CSV / "yaizu_222127_public_wireless_lan.csv")
    assert t.theme is None and "SSID" in t.frame.columns and t.rows_published == 17


def write_geojson(path, features):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props,
         "geometry": None if geom is None else shapely.geometry.mapping(geom)}
        for props, geom in features]}
    path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")


def test_invalid_polygon_repaired_and_landslide_codes_decoded(tmp_path):
    bowtie = Polygon([(134.80, 34.70), (134.81, 34.71), (134.81, 34.70), (134.80, 34.71)])
    square = Polygon([(134.9, 34.9), (134.91, 34.9), (134.91, 34.91), (134.9, 34.91)])
    write_geojson(tmp_path / "a33.geojson", [
        ({"A33_001": 1, "A33_002": 2, "A33_003": "28", "A33_008": 0}, bowtie),
        ({"A33_001": 3, "A33_002": 3, "A33_003": "28", "A33_008": 1}, square)])
    t = one(tmp_path / "a33.geojson")
    assert t.theme == "landslide_area"
    assert list(t.frame["phenomenon"]) == ["急傾斜地の崩壊", "地滑り"]
    assert list(t.frame["zone_type"]) == ["土砂災害特別警戒区域（指定済）", "土砂災害警戒区域（指定前）"]
    assert list(t.frame["special_zone_pending"]) == [False, True]
    assert t.frame.geometry.is_valid.all() and t.frame.geometry.iloc[0].area > 0


def test_empty_geometries_and_points_outside_japan_reported_per_row(tmp_path):
    write_geojson(tmp_path / "pts.geojson", [
        ({"名称": "加古川駅", "洪水": "1"}, Point(134.8414, 34.7569)),
        ({"名称": "座標なし", "洪水": "1"}, None),
        ({"名称": "ロンドン", "洪水": ""}, Point(-0.12, 51.5)),
        ({"名称": "東加古川駅", "洪水": ""}, Point(134.8796, 34.7586))])
    t = one(tmp_path / "pts.geojson", title="避難場所")
    assert t.rows_in == 4 and t.rows_published == 2
    assert [(i.row, i.reason[:6]) for i in t.rejected] == [(2, "ジオメトリが"), (3, "位置が日本の")]
    assert list(t.frame["source_row"]) == [1, 4]


def test_flood_and_tsunami_codes(tmp_path):
    sq = Polygon([(134.9, 34.9), (134.91, 34.9), (134.91, 34.91), (134.9, 34.91)])
    write_geojson(tmp_path / "a31.geojson", [({"A31_201": 2, "A31_202": "2016/06/01"}, sq),
                                             ({"A31_201": 6, "A31_202": "2016/06/01"}, sq)])
    flood = one(tmp_path / "a31.geojson").frame
    assert list(flood["scale"]) == ["L2", "L2"] and list(flood["depth_rank"]) == [2, 6]
    assert list(flood["depth_range"]) == ["0.5m以上3m未満", "20m以上"]
    assert flood["depth_max_m"].iloc[0] == 3.0 and pd.isna(flood["depth_max_m"].iloc[1])
    write_geojson(tmp_path / "a40.geojson", [({"A40_003": "0.3m未満"}, sq),
                                             ({"A40_003": "1m以上 ～ 2m未満"}, sq)])
    tsunami = one(tmp_path / "a40.geojson").frame
    assert list(tsunami["depth_min_m"]) == [0.0, 1.0] and list(tsunami["depth_max_m"]) == [0.3, 2.0]


def test_municipality_codes():
    assert restore_code("28210") == "282103" and restore_code("282103") == "282103"
    assert restore_code("131017") is None          # wrong check digit
    warns = []
    assert list(restore_codes(pd.Series(["92011", "131016", None]), warns, "c")) == [
        "092011", "131016", None]                   # spreadsheet dropped the zero
    assert list(restore_codes(pd.Series(["28210", 28220.0]), warns, "c")) == ["282103", "282201"]
    assert not warns


def test_json_schema_has_japanese_titles():
    schema = themes.json_schema("shelter", merged=True)
    props = schema["properties"]
    assert props["flood"] == {"type": "boolean", "title": "災害種別_洪水", "x-title-en": "Flood",
                              "description": props["flood"]["description"]}
    assert props["municipality_code"]["title"] == "全国地方公共団体コード"
    assert "sources" in props and schema["title"] == "指定緊急避難場所・指定避難所"
    for theme in themes.THEMES.values():
        names = [f.name for f in theme.fields]
        assert len(names) == len(set(names)) and all(n.isascii() for n in names)
