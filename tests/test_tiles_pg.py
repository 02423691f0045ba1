"""Vector tiles of versions stored in PostGIS (store.tiles_pg): cut by ST_AsMVT and compared,
tile by tile with a real MVT decoder, with the GeoPackage path's tiles of the same version; the
pyramid written into the database at publish time; and both served over HTTP by the OGC API of
a web server that has no data directory.

The version tables are loaded from the embedded hazard data dir exactly as notes/PGMODE.md lays
them out (tests/pg_tables.py), in a throwaway database."""
from __future__ import annotations

import gzip

import mapbox_vector_tile
import pandas as pd
import pyogrio
import pytest
import requests
import shapely
from flask import Flask
from sqlalchemy import text

from ogcapi import tiles as ogc_tiles
from ogcapi.api import OGCAPI
from ogcapi.blueprint import register_ogcapi
from store import tiles as store_tiles
from store import tiles_pg
from store.db import Store
from store.features_pg import table_name
from tests import hazard_data, pg_tables
from tests.servers import live_server
from tests.test_tiles import assert_same_as_collection, tile_xy

pytestmark = [
    pytest.mark.skipif(not pg_tables.reachable(), reason="no PostgreSQL server"),
    pytest.mark.embedded_only(reason="compares PostGIS tiles with the GeoPackage path of the "
                                     "embedded hazard data dir"),
]


@pytest.fixture(scope="module")
def pg(hazard_dir):
    """(engine, {prefix: (collection id, gpkg, table)}) of the flood and landslide versions."""
    store = Store(hazard_dir)
    wanted = {"hazards--a31": None, "hazards--a33": None}
    with pg_tables.scratch_database() as engine:
        for c in store.active_collections():
            for prefix in wanted:
                if c.id.startswith(prefix):
                    table = table_name(c.id, c.version)
                    pg_tables.load_gpkg(engine, hazard_dir / c.path, table)
                    wanted[prefix] = (c.id, hazard_dir / c.path, table)
        yield engine, wanted


def tiles_over(gpkg, z):
    bbox = pyogrio.read_info(gpkg)["total_bounds"]
    x0, y0 = tile_xy(bbox[0], bbox[3], z)
    x1, y1 = tile_xy(bbox[2], bbox[1], z)
    return [(x, y) for x in range(x0 - 1, x1 + 2) for y in range(y0 - 1, y1 + 2)]


def features(data, layer):
    return {f["id"]: f for f in mapbox_vector_tile.decode(data)[layer]["features"]} \
        if data else {}


@pytest.mark.parametrize("prefix", ["hazards--a31", "hazards--a33"])
def test_cut_tiles_hold_what_the_geopackage_path_cuts(pg, prefix):
    engine, versions = pg
    cid, gpkg, table = versions[prefix]
    pdef = {"data": str(gpkg), "layer": "features"}
    for z in (8, 13, 16):
        for x, y in tiles_over(gpkg, z):
            with engine.connect() as conn:
                got = tiles_pg.cut_tile(conn, table, cid, z, x, y)
            want = ogc_tiles.cut_tile(pdef, cid, z, x, y)
            assert len(got) < store_tiles.MAX_TILE_BYTES
            a, b = features(got, cid), features(want, cid)
            assert set(a) == set(b), (z, x, y)
            for fid in a:
                assert a[fid]["properties"] == b[fid]["properties"], (z, x, y, fid)
                ga = shapely.geometry.shape(a[fid]["geometry"])
                gb = shapely.geometry.shape(b[fid]["geometry"])
                assert ga.geom_type == gb.geom_type
                # Both snap to the 4096 grid of the tile; they may differ by a unit or so.
                assert ga.symmetric_difference(gb).area <= 0.02 * max(gb.area, 16 * 16), fid


def test_pyramid_written_into_the_database_holds_every_feature(pg, hazard_dir):
    engine, versions = pg
    cid, gpkg, table = versions["hazards--a31"]
    meta = tiles_pg.write_pyramid(engine, table, name=cid)
    assert meta["json"]["tilestats"]["layers"][0]["count"] == hazard_data.FLOOD_GRID ** 2 + 1
    with engine.connect() as conn:
        assert tiles_pg.zoom_range(conn, table) == (0, store_tiles.PREGEN_MAXZOOM)
        rows = conn.execute(text(
            f"SELECT tile_column, tile_row, tile_data FROM {tiles_pg.pyramid_table(table)}"
            " WHERE zoom_level = :z"), {"z": store_tiles.PREGEN_MAXZOOM}).all()
    found = {}
    for _, _, data in rows:
        assert bytes(data[:2]) == b"\x1f\x8b"                     # stored gzipped once
        tile = gzip.decompress(bytes(data))
        assert len(tile) < store_tiles.MAX_TILE_BYTES
        found.update({fid: f["properties"] for fid, f in features(tile, cid).items()})
    assert_same_as_collection(found, pyogrio.read_dataframe(gpkg, fid_as_index=True))
    # The same tiles as the embedded pyramid of this version (one tippecanoe, same input).
    archive = store_tiles.TileArchive(store_tiles.tiles_path(gpkg))
    lon, lat = hazard_data.POINT
    for z in (5, 10, 14):
        x, y = tile_xy(lon, lat, z)
        with engine.connect() as conn:
            ours = tiles_pg.stored_tile(conn, table, z, x, y)
        theirs = archive.get(z, x, y)
        assert same_properties(ours, cid) == same_properties(theirs, cid)


def same_properties(gzipped, layer):
    """id -> properties, dates as timestamps: GDAL writes a GeoPackage datetime as ISO text
    with a Z, a version table holds it as text (without)."""
    def norm(v):
        if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
            return pd.Timestamp(v).tz_localize(None) if pd.Timestamp(v).tzinfo is None \
                else pd.Timestamp(v).tz_convert(None)
        return v
    return {k: {n: norm(v) for n, v in f["properties"].items()}
            for k, f in features(gzip.decompress(gzipped), layer).items()}


def test_served_by_a_web_server_without_data_dir(pg):
    """The OGC API of a web server that only knows the database: pyramid tiles, tiles cut per
    request, ETag per version, 304, 204, 404 outside the limits and for a restricted dataset."""
    engine, versions = pg
    cid, gpkg, table = versions["hazards--a31"]
    slide_id, slide_gpkg, slide_table = versions["hazards--a33"]
    tiles_pg.write_pyramid(engine, table, name=cid)
    bbox = list(pyogrio.read_info(gpkg)["total_bounds"])

    def listed():
        return [{"id": cid, "title": "洪水", "bbox": bbox, "path": f"postgis:{table}",
                 "layer": table, "access": "public"},
                {"id": slide_id, "title": "土砂", "bbox": bbox, "path": f"postgis:{slide_table}",
                 "layer": slide_table, "access": "organization:hyogo-pref"}]

    app = Flask(__name__)
    register_ogcapi(app, OGCAPI("http://127.0.0.1:8000/ogcapi", listed, lambda: "1",
                                engine=engine), prefix="/ogcapi")
    lon, lat = hazard_data.POINT
    with live_server(app) as base:
        def get(c, z, x, y, **headers):
            return requests.get(f"{base}/ogcapi/collections/{c}/tiles/WebMercatorQuad/"
                                f"{z}/{y}/{x}", params={"f": "mvt"}, headers=headers, timeout=30)
        x, y = tile_xy(lon, lat, 12)
        r = get(cid, 12, x, y, **{"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.headers["Content-Type"] == ogc_tiles.MVT
        assert r.headers["Content-Encoding"] == "gzip" and r.headers["Cache-Control"]
        assert r.headers["ETag"] == f'"{table}"' and "_v1" in r.headers["ETag"]
        with engine.connect() as conn:
            stored = tiles_pg.stored_tile(conn, table, 12, x, y)
        assert r.content == gzip.decompress(stored)           # requests undoes the gzip
        assert get(cid, 12, x, y, **{"If-None-Match": r.headers["ETag"]}).status_code == 304
        x, y = tile_xy(lon, lat, 16)                            # deeper than the pyramid
        (f,) = features(get(cid, 16, x, y).content, cid).values()
        assert f["properties"]["depth_range"] == "0.5m以上3m未満"
        far = tile_xy(bbox[0] + 0.0001, bbox[1] + 0.0001, 18)
        assert get(cid, 18, *far).status_code == 204
        assert get(cid, 10, 0, 0).status_code == 404
        assert get(slide_id, 16, x, y).status_code == 404      # not readable by this caller
