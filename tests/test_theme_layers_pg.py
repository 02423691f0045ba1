"""Area theme layers merged inside PostGIS (store.theme_layers_pg): the version table built by
INSERT … SELECT per member holds, row for row, what the embedded merge of the same members
holds (geo.theme_layers.member_chunks), including a member whose columns need casting; its
pyramid is written at publish time; point-theme members are read back as the embedded reader
reads them."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy import text

from geo import theme_layers
from store import theme_layers_pg, tiles_pg
from store.db import Store
from store.features_pg import table_name
from tests import pg_tables

pytestmark = [
    pytest.mark.skipif(not pg_tables.reachable(), reason="no PostgreSQL server"),
    pytest.mark.embedded_only(reason="compares with the embedded merge of the hazard data "
                                     "dir's GeoPackages, loaded into tables of its own"),
]


@pytest.fixture(scope="module")
def members(hazard_dir, tmp_path_factory):
    """Two flood members as GeoPackages: the published one, and a copy whose depth rank is
    text (one of them not a number) and which lacks the scale column."""
    store = Store(hazard_dir)
    (flood,) = [c for c in store.active_collections() if c.id.startswith("hazards--a31")]
    gpkg = hazard_dir / flood.path
    odd = pyogrio.read_dataframe(gpkg).drop(columns=["scale"])
    odd["depth_rank"] = odd["depth_rank"].astype(str)
    odd.loc[0, "depth_rank"] = "不明"
    odd.loc[1, "depth_min_m"] = np.nan
    odd_gpkg = tmp_path_factory.mktemp("odd") / "odd.gpkg"
    pyogrio.write_dataframe(odd, odd_gpkg, layer="features", driver="GPKG")
    return [(gpkg, "features"), (odd_gpkg, "features")]


def test_area_layer_merged_in_sql_holds_the_embedded_merge(members, monkeypatch):
    monkeypatch.setenv("RENKEI_TILES_PREGEN_MIN", "100")
    want = pd.concat(list(theme_layers.member_chunks("flood_area", members)),
                     ignore_index=True)
    with pg_tables.scratch_database() as engine:
        tables = [table_name(f"member-{i}", 1) for i in range(len(members))]
        for (path, layer), table in zip(members, tables):
            pg_tables.load_gpkg(engine, path, table, layer)
        written = theme_layers_pg.merge_areas(engine, "flood_area", tables,
                                              "theme-flood_area", 3)
        assert written.path == "postgis:" + table_name("theme-flood_area", 3)
        assert written.feature_count == len(want) == 2 * 65
        got = gpd.read_postgis(text(f'SELECT * FROM "{written.layer}" ORDER BY fid'), engine,
                               geom_col="geom", index_col="fid")
        with engine.connect() as conn:
            kinds = conn.execute(text(
                "SELECT type FROM geometry_columns WHERE f_table_name = :t"),
                {"t": written.layer}).scalar()
            indexed = conn.execute(text(
                "SELECT count(*) FROM pg_indexes WHERE tablename = :t AND indexdef LIKE"
                " '%USING gist (geom)%'"), {"t": written.layer}).scalar()
        assert tiles_pg.publish_pyramid(engine, written.layer, name="theme-flood_area",
                                        count=written.feature_count)
        with engine.connect() as conn:
            assert tiles_pg.zoom_range(conn, written.layer) == (0, 14)
    assert (kinds, indexed) == ("MULTIPOLYGON", 1)
    assert list(got.index) == list(range(1, len(want) + 1))
    assert [c for c in got.columns if c != "geom"] == [c for c in want.columns
                                                       if c != "geometry"]
    assert written.bbox == pytest.approx(list(want.total_bounds))
    for col in want.columns.drop("geometry"):
        a = [None if pd.isna(v) else v for v in got[col].tolist()]
        b = [None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)
             for v in want[col].tolist()]
        assert a == b, col
    assert shapely.equals(got.geometry.values, want.geometry.values).all()
    assert got["depth_rank"].iloc[65] is None or pd.isna(got["depth_rank"].iloc[65])  # 不明
    assert got["sources"].iloc[0] == "兵庫県: hazards--a31-kakogawa"


def test_point_theme_member_read_as_the_embedded_reader_reads_it(hazard_dir):
    store = Store(hazard_dir)
    (shelter,) = [c for c in store.active_collections() if c.id.startswith(
        "gsi-shelters--evacuation")]
    gpkg = hazard_dir / shelter.path
    with pg_tables.scratch_database() as engine:
        table = table_name(shelter.id, 1)
        pg_tables.load_gpkg(engine, gpkg, table)
        got = theme_layers_pg.read_member(engine, table, "shelter")
    want = theme_layers.read_member(gpkg, "features", "shelter")
    assert list(got.columns) == list(want.columns)
    merged_got = theme_layers.merge("shelter", [got])
    merged_want = theme_layers.merge("shelter", [want])
    pd.testing.assert_frame_equal(pd.DataFrame(merged_got.drop(columns="geometry")),
                                  pd.DataFrame(merged_want.drop(columns="geometry")),
                                  check_dtype=False)
