"""Prefecture-wide theme layers: merging real GSI and city shelter lists, and the whole path
from `renkei harvest` to the merged collection read by GDAL from the GeoPackage and through
the OGC API."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pyogrio
import pytest
import requests
from shapely import affinity

from store.db import Collection, Dataset, Store
from geo import themes
from geo.readers import read_resource
from geo.theme_layers import merge
from geo.translate import translate
from tests import published
from tests.servers import REPO, TEST_DATA, renkei_serve

GSI_E = TEST_DATA / "geojson/gsi_emergency_282103.json"
GSI_V = TEST_DATA / "geojson/gsi_evacuation_282103.json"
CITY = TEST_DATA / "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json"


def member(path, title, publisher, dataset):
    (layer,) = read_resource(path)
    return translate(layer, title=title, publisher=publisher, source_dataset=dataset,
                     municipality_code="282103").frame


@pytest.fixture(scope="module")
def members():
    return [member(GSI_E, "加古川市 指定緊急避難場所", "兵庫県", "gsi-e"),
            member(GSI_V, "加古川市 指定避難所", "兵庫県", "gsi-v"),
            member(CITY, "加古川市 指定緊急避難場所兼指定避難所", "加古川市", "city")]


def test_duplicates_kept_once_with_every_source(members):
    merged = merge("shelter", members)
    rows = merged[merged["name"] == "加古川公民館"]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["sources"] == "兵庫県: gsi-e; 兵庫県: gsi-v; 加古川市: city"
    assert row["kind"] == themes.KIND_BOTH
    assert row["gsi_id"] == "E2821000004201"            # the GSI record leads
    assert row["capacity"] == 146 and row["phone"] == "079-423-3841"   # the city fills gaps
    assert row["flood"] and "洪水: 2階以上" in row["note"]
    # Emergency sites and shelters pair by 共通ID; the city list by name within 50 m.
    gsi_pairs = (merged["sources"].str.contains("gsi-e") & merged["sources"].str.contains("gsi-v"))
    assert gsi_pairs.sum() >= 60
    assert len(merged) < sum(len(m) for m in members) - 100
    assert set(merged.columns) == {f.name for f in themes.merged_fields(themes.SHELTER)} | {
        "geometry"}


def test_same_name_far_apart_or_same_dataset_is_not_merged(members):
    city = members[2].copy()
    moved = city[city["name"] == "加古川公民館"].iloc[[0]].copy()   # listed twice by the city
    # 0.001° longitude ≈ 92 m at 34.8°N: too far to be the same shelter.
    moved["geometry"] = moved.geometry.map(lambda g: affinity.translate(g, xoff=0.001))
    moved["source_dataset"] = "other"
    merged = merge("shelter", [members[0], city, moved])
    assert (merged["name"] == "加古川公民館").sum() == 2
    twice = merge("shelter", [members[0], members[0]])   # one dataset twice: no self-merge
    assert len(twice) == 2 * len(members[0])


def test_streamed_point_merge_is_the_in_memory_merge(members, tmp_path):
    """A point theme layer is rebuilt from its members' files in batches (a member of a
    million rows read whole held ~2 GB); what it writes is exactly what `merge` makes, batch
    boundaries falling inside duplicate groups or not."""
    from geo.theme_layers import merged_chunks, read_member
    files = []
    for i, frame in enumerate(members):
        path = tmp_path / f"member{i}.gpkg"
        pyogrio.write_dataframe(frame, path, layer="features")
        files.append((path, "features"))
    whole = merge("shelter", [read_member(p, layer, "shelter") for p, layer in files])
    for chunk in (7, 50, 10_000):
        parts = list(merged_chunks("shelter", files, chunk=chunk))
        assert chunk >= 10_000 or len(parts) > 2
        streamed = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(pd.DataFrame(whole.drop(columns="geometry")),
                                      pd.DataFrame(streamed.drop(columns="geometry")))
        assert list(whole.geometry.to_wkt()) == list(streamed.geometry.to_wkt())


def test_a_name_shared_by_thousands_of_rows_is_matched_by_distance():
    """「AED」 three thousand times: matched through a tree, not an all-pairs matrix, with the
    same answer as comparing every pair (under 50 m, different datasets)."""
    import geopandas as gpd
    import numpy as np
    from geo.theme_layers import duplicate_groups
    rnd = np.random.default_rng(5)
    n = 3000
    x = 134.8 + rnd.random(n) * 0.05
    y = 34.7 + rnd.random(n) * 0.05
    x[1::2] = x[::2] + rnd.choice([0.0002, 0.0008], n // 2)   # ~18 m or ~73 m east
    y[1::2] = y[::2]
    frame = gpd.GeoDataFrame({"name": ["AED"] * n,
                              "source_dataset": np.where(np.arange(n) % 2, "city", "pref")},
                             geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")
    groups = duplicate_groups(frame)
    lat = np.radians(y.mean())
    px, py = x * 111_320.0 * np.cos(lat), y * 111_320.0
    dist = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
    ds = frame["source_dataset"].to_numpy()
    close = (dist < 50) & (ds[:, None] != ds[None, :])
    a, b = np.nonzero(np.triu(close, 1))
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for i, j in zip(a, b):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    expected = np.array([find(i) for i in range(n)])
    assert 0 < len(a) < n
    assert (groups == expected).all()


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
        license: gsi
  - name: kakogawa-files
    type: files
    organization: kakogawa-city
    files:
      - id: shelters
        title: 加古川市 指定緊急避難場所兼指定避難所一覧
        url: kakogawa_shelters_sjis.csv
        license: cc-by-4.0
"""


@pytest.fixture
def served(data_dir):
    with renkei_serve(data_dir, workers=1) as (base, _pid):
        yield base


def harvest(data_dir, config):
    return subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_harvest_two_sources_publishes_merged_shelter_layer(data_dir, tmp_path, served):
    for name in ("gsi_emergency_282103.json", "kakogawa_shelters_sjis.csv"):
        shutil.copy(REPO / "catalog" / "examples" / name, tmp_path / name)
    config = tmp_path / "sources.yaml"
    config.write_text(SOURCES, encoding="utf-8")
    result = harvest(data_dir, config)
    assert result.returncode == 0, result.stderr
    assert "rebuilt theme layer shelter" in result.stderr

    store = Store(data_dir)
    with store.session() as s:
        col = s.get(Collection, "theme-shelter")
        ds = s.get(Dataset, "theme-shelter")
        assert (ds.source_name, ds.theme, ds.status) == ("renkei-themes", "shelter", "active")
        assert ds.title == "兵庫県 指定緊急避難場所・指定避難所（統合）"
        assert s.get(Dataset, "kakogawa-files--shelters").theme == "shelter"
        path, version = col.path, col.version
        res = s.get(Dataset, "kakogawa-files--shelters").resources[0]
        quality = res.quality[0]
    assert quality["theme"] == "shelter" and quality["fields_mapped"]["名称"] == "name"
    assert "名称 → name" in quality["mapping"] and quality["fields_unmapped"] == ["備蓄物資"]

    gpkg = published.frame(data_dir, path)
    assert len(gpkg) < 82 + 68 and gpkg["sources"].str.contains(";").sum() >= 50
    kominkan = gpkg[gpkg["name"] == "加古川公民館"].iloc[0]
    assert kominkan["kind"] == themes.KIND_BOTH and kominkan["municipality_code"] == "282103"
    assert kominkan["publisher"] == "加古川市" and kominkan["capacity"] == 146

    base = served
    ogc = pyogrio.read_dataframe(f"OAPIF:{base}/ogcapi/collections/theme-shelter")
    assert len(ogc) == len(gpkg)
    assert set(ogc["name"]) == set(gpkg["name"])
    q = requests.get(f"{base}/ogcapi/collections/theme-shelter/queryables?f=json",
                     timeout=10).json()
    assert q["properties"]["flood"]["title"] == "災害種別_洪水"
    page = requests.get(f"{base}/datasets/theme-shelter", timeout=10)
    assert page.ok and "指定緊急避難場所・指定避難所（統合）" in page.text

    again = harvest(data_dir, config)                  # nothing changed: no new version
    assert again.returncode == 0 and "rebuilt theme layer" not in again.stderr
    with store.session() as s:
        assert s.get(Collection, "theme-shelter").version == version
