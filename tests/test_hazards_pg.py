"""The hazard lookup on versions stored in PostGIS (ogcapi.hazards_pg) gives the same answer,
to the decimetre, as on the GeoPackages of the same versions: covering polygons through the
GiST index, nearest shelters by KNN then metres on the sphere, checked against a brute force
over every shelter."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyogrio
import pytest

from ogcapi import hazards
from ogcapi.gpkg_read import FileRegistry
from store.db import Store
from store.features_pg import table_name
from tests import hazard_data, pg_tables

pytestmark = [
    pytest.mark.skipif(not pg_tables.reachable(), reason="no PostgreSQL server"),
    pytest.mark.embedded_only(reason="compares with the GeoPackage path of the embedded hazard "
                                     "data dir"),
]
LON, LAT = hazard_data.POINT


@pytest.fixture(scope="module")
def layers(hazard_dir):
    """(engine, layers read from GeoPackages, the same layers read from PostGIS tables)."""
    store = Store(hazard_dir)
    gpkg, pg = [], []
    with pg_tables.scratch_database() as engine:
        for c in store.active_collections():
            lyr = hazards.Layer(c.id, c.title, c.dataset.theme, str(hazard_dir / c.path),
                                c.layer, c.dataset_id, c.bbox)
            gpkg.append(lyr)
            table = table_name(c.id, c.version)
            pg_tables.load_gpkg(engine, hazard_dir / c.path, table)
            pg.append(dataclasses.replace(lyr, path=f"postgis:{table}", layer=table))
        yield engine, gpkg, pg


def points():
    rng = np.random.default_rng(14)
    yield LAT, LON
    yield 34.80, 134.80                                   # in no zone
    yield 34.7415, 134.8515                               # in a small flood square
    yield 35.60, 134.40                                   # far north of every shelter
    for lat, lon in zip(rng.uniform(34.70, 34.80, 12), rng.uniform(134.78, 134.90, 12)):
        yield float(lat), float(lon)


def test_same_answer_as_the_geopackages(layers):
    engine, gpkg, pg = layers
    files = FileRegistry()
    hits = 0
    for lat, lon in points():
        want = hazards.lookup(files, gpkg, lat, lon)
        got = hazards.lookup(files, pg, lat, lon, engine=engine)
        assert got == want, (lat, lon)
        hits += bool(got["hazards"])
    assert hits >= 3
    at_station = hazards.lookup(files, pg, LAT, LON, engine=engine)
    assert {h["theme"] for h in at_station["hazards"]} == {"flood_area", "landslide_area"}
    assert at_station["hazards"][0]["attributes"]["depth_rank"] == 2


@pytest.mark.parametrize("flags", [[], ["flood"], ["flood", "landslide"]])
def test_nearest_shelters_by_knn_are_the_nearest_of_all(layers, hazard_dir, flags):
    engine, gpkg, pg = layers
    (shelter,) = [lyr for lyr in pg if lyr.id == hazards.SHELTER_LAYER]
    (source,) = [lyr for lyr in gpkg if lyr.id == hazards.SHELTER_LAYER]
    frame = pyogrio.read_dataframe(source.path)
    for f in flags:
        frame = frame[frame[f] == 1]
    for lat, lon in points():
        d = sorted(hazards.haversine(lat, lon, g.y, g.x) for g in frame.geometry
                   if abs(g.x - lon) <= 0.64 and abs(g.y - lat) <= 0.64)
        with engine.connect() as conn:
            got = hazards.hazards_pg.nearest(conn, shelter.layer, lat, lon,
                                             hazards.SHELTER_FLAGS, flags, 7, 0.64)
        assert [s["distance_m"] for s in got] == [round(x, 1) for x in d[:7]], (lat, lon)
        for s in got:
            assert all(s["hazards"][f] is True for f in flags)
