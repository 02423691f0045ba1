"""OGC API – Tiles: Mapbox Vector Tiles decoded by mapbox-vector-tile and compared with the
collection, from the pre-generated pyramid (flood) and cut per request (landslide)."""
from __future__ import annotations

import gzip
import math

import mapbox_vector_tile
import numpy as np
import pandas as pd
import pytest
import requests
import shapely

from catalog.app import create_app
from store import tiles as store_tiles
from store.db import Store
from tests import hazard_data, published
from tests.servers import live_server


@pytest.fixture(scope="module")
def site(hazard_dir):
    with live_server(create_app(hazard_dir)) as base:
        yield base


def collection(data_dir, prefix):
    """(id, path) of a published collection; the path as the catalogue has it (a GeoPackage
    relative to the data dir, or `postgis:<table>`), read through tests/published.py."""
    store = Store(data_dir)
    (c,) = [c for c in store.active_collections() if c.id.startswith(prefix)]
    return c.id, c.path


def tile_xy(lon, lat, z):
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def get_tile(base, cid, z, x, y, **headers):
    return requests.get(f"{base}/ogcapi/collections/{cid}/tiles/WebMercatorQuad/{z}/{y}/{x}",
                        params={"f": "mvt"}, headers=headers, timeout=30)


def decode(content):
    return mapbox_vector_tile.decode(content)


def test_tilesets_linked_from_the_collection_with_metadata_and_tilejson(site, hazard_dir):
    cid, _ = collection(hazard_dir, "hazards--a31")
    doc = requests.get(f"{site}/ogcapi/collections/{cid}?f=json", timeout=10).json()
    (link,) = [lk for lk in doc["links"] if lk["rel"].endswith("tilesets-vector")]
    sets = requests.get(local(site, link["href"]), timeout=10).json()
    (ts,) = sets["tilesets"]
    assert ts["tileMatrixSetURI"].endswith("WebMercatorQuad") and ts["dataType"] == "vector"
    self_href = next(lk["href"] for lk in ts["links"] if lk["rel"] == "self")
    meta = requests.get(local(site, self_href), timeout=10).json()
    assert meta["layers"][0]["id"] == cid
    assert meta["layers"][0]["propertiesSchema"]["properties"]["depth_rank"]["type"] == "integer"
    template = next(lk["href"] for lk in meta["links"] if lk["rel"] == "item")
    assert "{tileMatrix}/{tileRow}/{tileCol}" in template
    tj = requests.get(local(site, self_href), params={"f": "tilejson"}, timeout=10).json()
    assert tj["tilejson"] == "3.0.0" and tj["vector_layers"][0]["id"] == cid
    assert tj["vector_layers"][0]["fields"]["depth_rank"] == "Number"
    lon, lat = hazard_data.POINT
    x, y = tile_xy(lon, lat, 12)
    url = tj["tiles"][0].replace("{z}", "12").replace("{x}", str(x)).replace("{y}", str(y))
    assert requests.get(local(site, url), timeout=10).headers["Content-Type"] == store_tiles_mvt()


def local(site, href):
    """Links name the app's configured base URL; the test server listens elsewhere."""
    return href.replace("http://127.0.0.1:8000", site)


def store_tiles_mvt():
    return "application/vnd.mapbox-vector-tile"


def every_feature(base, cid, bbox, z):
    """id -> properties of the features of every tile over bbox at zoom z."""
    x0, y0 = tile_xy(bbox[0], bbox[3], z)
    x1, y1 = tile_xy(bbox[2], bbox[1], z)
    found = {}
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            r = get_tile(base, cid, z, x, y)
            assert r.status_code in (200, 204), r.text
            if r.status_code == 200:
                assert len(r.content) < store_tiles.MAX_TILE_BYTES
                for f in decode(r.content)[cid]["features"]:
                    found[f["id"]] = f["properties"]
    return found


def assert_same_as_collection(found, frame):
    """``frame``: the version's features indexed by fid (tests/published.py)."""
    assert set(found) == set(frame.index)
    for fid, props in found.items():
        row = frame.loc[fid]
        expected = {k: (v.item() if isinstance(v, np.generic) else v)
                    for k, v in row.drop("geometry").items()
                    if v is not None and not (isinstance(v, float) and math.isnan(v))}
        for k, v in expected.items():      # dates travel as ISO 8601 text in MVT
            if isinstance(v, pd.Timestamp) and isinstance(props.get(k), str):
                props[k] = pd.Timestamp(props[k]).tz_localize(None)
        assert props == expected, fid


def test_pregenerated_tiles_hold_every_feature_with_its_attributes(site, hazard_dir):
    cid, path = collection(hazard_dir, "hazards--a31")
    assert published.has_pyramid(hazard_dir, path)     # pre-generated at publish time
    bbox = published.bounds(hazard_dir, path)
    found = every_feature(site, cid, bbox, store_tiles.PREGEN_MAXZOOM)
    assert len(found) == hazard_data.FLOOD_GRID ** 2 + 1
    assert_same_as_collection(found, published.frame(hazard_dir, path))
    # Deeper than the pyramid: cut from the GeoPackage, same features.
    lon, lat = hazard_data.POINT
    x, y = tile_xy(lon, lat, 16)
    (f,) = decode(get_tile(site, cid, 16, x, y).content)[cid]["features"]
    assert f["properties"]["depth_range"] == "0.5m以上3m未満"


def test_small_layer_cut_per_request_from_the_rtree(site, hazard_dir):
    cid, path = collection(hazard_dir, "hazards--a33")
    assert not published.has_pyramid(hazard_dir, path)
    bbox = published.bounds(hazard_dir, path)
    for z in (8, 15):
        found = every_feature(site, cid, bbox, z)
        assert_same_as_collection(found, published.frame(hazard_dir, path))
    lon, lat = hazard_data.POINT
    x, y = tile_xy(lon, lat, 15)
    layer = decode(get_tile(site, cid, 15, x, y).content)[cid]
    (f,) = layer["features"]
    assert f["properties"]["zone_type"] == "土砂災害特別警戒区域（指定済）"
    assert f["geometry"]["type"] == "Polygon"


def test_gzip_etag_not_modified_empty_and_out_of_range(site, hazard_dir):
    cid, path = collection(hazard_dir, "hazards--a31")
    lon, lat = hazard_data.POINT
    x, y = tile_xy(lon, lat, 13)
    r = requests.get(f"{site}/ogcapi/collections/{cid}/tiles/WebMercatorQuad/13/{y}/{x}?f=mvt",
                     headers={"Accept-Encoding": "gzip"}, timeout=10, stream=True)
    raw = r.raw.read()
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Cache-Control"]
    plain = get_tile(site, cid, 13, x, y, **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(raw) == plain.content and decode(plain.content)[cid]["features"]
    tag = plain.headers["ETag"]
    assert "v1" in tag
    again = get_tile(site, cid, 13, x, y, **{"If-None-Match": tag})
    assert again.status_code == 304 and not again.content
    # Empty inside the limits: 204; outside them, or beyond the deepest zoom: 404.
    geoms = published.frame(hazard_dir, path).geometry.values
    bbox = published.bounds(hazard_dir, path)
    x0, y0 = tile_xy(bbox[0], bbox[3], 18)
    x1, y1 = tile_xy(bbox[2], bbox[1], 18)
    empty = next((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)
                 if not shapely.intersects(geoms, shapely.box(
                     *store_tiles.tile_bounds_lonlat(18, x, y)).buffer(0.0005)).any())
    assert get_tile(site, cid, 18, *empty).status_code == 204
    assert get_tile(site, cid, 10, 0, 0).status_code == 404
    assert get_tile(site, cid, 19, x, y).status_code == 404
    assert get_tile(site, "no-such-collection", 10, 0, 0).status_code == 404
    bad = requests.get(f"{site}/ogcapi/collections/{cid}/tiles/WebMercatorQuad/13/{y}/{x}?f=png",
                       timeout=10)
    assert bad.status_code == 400


def test_pyramid_removed_with_its_version(tmp_path):
    """A newer version of a large layer replaces the old pyramid file with its own."""
    import geopandas as gpd
    from store import versions
    frame = gpd.GeoDataFrame({"n": list(range(30))}, geometry=[
        shapely.box(134.8 + i * 0.01, 34.7, 134.805 + i * 0.01, 34.705) for i in range(30)],
        crs="EPSG:4326")
    import os
    os.environ["RENKEI_TILES_PREGEN_MIN"] = "10"
    try:
        v1 = versions.write_version(frame, tmp_path, "big", 1)
        v2 = versions.write_version(frame, tmp_path, "big", 2)
    finally:
        del os.environ["RENKEI_TILES_PREGEN_MIN"]
    assert published.has_pyramid(tmp_path, v1.path) and published.has_pyramid(tmp_path, v2.path)
    versions.remove_stale_versions(tmp_path, "big", v2.path)
    if not v1.path.startswith("postgis:"):
        assert not (tmp_path / v1.path).exists()
    assert not published.has_pyramid(tmp_path, v1.path)
    assert published.has_pyramid(tmp_path, v2.path)
    small = versions.write_version(frame.head(3), tmp_path, "small", 1)
    assert not published.has_pyramid(tmp_path, small.path)


def test_pyramid_written_in_several_chunks_keeps_every_id(tmp_path):
    """Features reach tippecanoe a chunk at a time and as several files (one for about two
    chunks here): ids and attributes survive every chunk and every file, in one layer."""
    import geopandas as gpd
    import pyogrio as po
    frame = gpd.GeoDataFrame({"n": list(range(23)), "label": [f"区域{i}" for i in range(23)]},
                             geometry=[shapely.box(134.8 + i * 0.01, 34.7, 134.805 + i * 0.01,
                                                   34.705) for i in range(23)], crs="EPSG:4326")
    gpkg = tmp_path / "v1.gpkg"
    po.write_dataframe(frame, gpkg, layer="features", driver="GPKG")
    out = tmp_path / "v1.mbtiles"
    (tmp_path / "parts").mkdir()
    parts, _ = store_tiles.export_features(gpkg, "features", tmp_path / "parts", chunk=5,
                                           part_bytes=700)
    assert len(parts) >= 3 and all(p.suffix == ".fgb" for p in parts)
    meta = store_tiles.pregenerate(gpkg, "features", out, name="chunks", chunk=5,
                                   part_bytes=700)
    assert meta["json"]["tilestats"]["layers"][0]["count"] == 23
    assert [layer["id"] for layer in meta["json"]["vector_layers"]] == ["chunks"]
    archive = store_tiles.TileArchive(out)
    found = {}
    for z, x, tms_y, data in archive._con().execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles WHERE zoom_level = 14"):
        assert data[:2] == b"\x1f\x8b"                  # stored gzipped, sent as it is
        for f in decode(gzip.decompress(data))["chunks"]["features"]:
            found[f["id"]] = f["properties"]
    assert found == {i + 1: {"n": i, "label": f"区域{i}"} for i in range(23)}


def test_tippecanoe_never_maps_more_than_a_part_of_a_large_layer(tmp_path):
    """tippecanoe maps each FlatGeobuf input whole and keeps every page it read until the
    file is done (a 1.4 GB file of 7.4M points took it to 1.9 GB): the export's files stay
    within the part budget (plus one batch) however many features the layer has, and
    together hold every feature once, in fid order."""
    import geopandas as gpd
    import pyogrio as po
    sizes = {}
    for n in (400, 1600):
        frame = gpd.GeoDataFrame(
            {"label": [f"観測点{i}" for i in range(n)]},
            geometry=shapely.points(134.2 + np.arange(n) * 1e-4, np.full(n, 34.7)),
            crs="EPSG:4326")
        gpkg = tmp_path / f"{n}.gpkg"
        po.write_dataframe(frame, gpkg, layer="features", driver="GPKG")
        (tmp_path / str(n)).mkdir()
        paths, fid = store_tiles.export_features(gpkg, "features", tmp_path / str(n),
                                                 chunk=50, part_bytes=8_000)
        sizes[n] = [p.stat().st_size for p in paths]
        ids = [i for p in paths for i in po.read_dataframe(p, columns=[fid])[fid]]
        assert ids == list(range(1, n + 1))
    assert max(sizes[1600]) <= 1.5 * max(sizes[400]) < 30_000
    assert len(sizes[1600]) >= 3.5 * len(sizes[400])


def test_features_reach_tippecanoe_as_flatgeobuf_with_their_types(tmp_path):
    """Integers, doubles, booleans and text go to tippecanoe as FlatGeobuf (its 2.72 reader
    would turn integers into text: they travel as doubles) and come out of the tiles with their
    types and the fid as the id. A layer FlatGeobuf cannot carry unchanged (a date, an integer
    a double would round) goes as GeoJSON text, as before."""
    import geopandas as gpd
    import pyogrio as po
    n = 12
    frame = gpd.GeoDataFrame(
        {"n": np.arange(n, dtype="int64") * 1000, "rank": np.arange(n, dtype="int32"),
         "depth": [0.25 + i for i in range(n)], "flag": [i % 2 == 0 for i in range(n)],
         "label": [f"区域{i}" for i in range(n)]},
        geometry=[shapely.box(134.8 + i * 0.01, 34.7, 134.805 + i * 0.01, 34.705)
                  for i in range(n)], crs="EPSG:4326")
    gpkg = tmp_path / "v1.gpkg"
    po.write_dataframe(frame, gpkg, layer="features", driver="GPKG")
    (tmp_path / "x").mkdir()
    paths, fid = store_tiles.export_features(gpkg, "features", tmp_path / "x")
    assert [p.suffix for p in paths] == [".fgb"] and fid == "fid"
    out = tmp_path / "v1.mbtiles"
    store_tiles.pregenerate(gpkg, "features", out, name="typed")
    found = {}
    for (data,) in store_tiles.TileArchive(out)._con().execute(
            "SELECT tile_data FROM tiles WHERE zoom_level = 14"):
        for f in decode(gzip.decompress(data))["typed"]["features"]:
            found[f["id"]] = f["properties"]
    assert found == {i + 1: {"n": i * 1000, "rank": i, "depth": 0.25 + i, "flag": i % 2 == 0,
                             "label": f"区域{i}"} for i in range(n)}
    for props in found.values():
        assert [type(props[k]) for k in ("n", "rank", "flag", "label")] == [int, int, bool, str]
    for name, column in (("when", pd.date_range("2024-04-01", periods=n)),
                         ("big", [2 ** 53 + 1] * n)):
        other = tmp_path / f"{name}.gpkg"
        po.write_dataframe(frame.assign(**{name: column}), other, layer="features",
                           driver="GPKG")
        (tmp_path / name).mkdir()
        paths, fid = store_tiles.export_features(other, "features", tmp_path / name,
                                                 chunk=5, part_bytes=1)
        assert [p.suffix for p in paths] == [".geojsons"] and fid == "fid", name
        assert list(paths[0].parent.iterdir()) == paths    # no half-written FlatGeobuf left


def test_tile_routes_described_in_the_ogc_api_document(site, hazard_dir):
    """The OGC API document describes the tile routes, and what they answer conforms to it:
    schemathesis generates requests from the document (zooms, rows, columns, formats) and
    checks status codes, content types and JSON bodies against it."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                     response_schema_conformance, status_code_conformance)
    cid, _ = collection(hazard_dir, "hazards--a31")
    spec = requests.get(f"{site}/ogcapi/openapi?f=json", timeout=60).json()
    tile_path = f"/collections/{cid}/tiles/WebMercatorQuad/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
    assert {f"/collections/{cid}/tiles", f"/collections/{cid}/tiles/WebMercatorQuad",
            tile_path} <= set(spec["paths"])
    assert "application/vnd.mapbox-vector-tile" in \
        spec["paths"][tile_path]["get"]["responses"]["200"]["content"]
    schema = schemathesis.openapi.from_dict(spec).include(path_regex=r"/tiles")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3 * len([p for p in spec["paths"] if p.endswith("/tiles")])
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    for operation in operations:
        if cid not in operation.path:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(base_url=f"{site}/ogcapi", checks=checks)
        check()
    # The described tile, fetched by hand at the test point, is a real tile.
    lon, lat = hazard_data.POINT
    x, y = tile_xy(lon, lat, 12)
    assert decode(get_tile(site, cid, 12, x, y).content)[cid]["features"]
