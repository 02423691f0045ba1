"""The OGC API tests' GeoPackages, served from PostGIS in PostgreSQL mode.

Tests that build GeoPackages and hand them to an OGCAPI (test_ogcapi, test_ogcapi_crs,
test_cql2, test_ogcapi_counts) run unchanged in embedded mode. In PostgreSQL mode each
GeoPackage is loaded once through store.features_pg's writer (the layout every published
version has) and the collection is served from that table; the tests keep reading their
expectations from the GeoPackage, so both modes are held to the same answers.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from tests import pg_mode

_LOCK = threading.Lock()
_LOADED: dict = {}
_ENGINE = {}


def active() -> bool:
    return pg_mode.active()


def engine():
    """The engine of this helper's own schema in the run's database."""
    with _LOCK:
        if "engine" not in _ENGINE:
            from sqlalchemy import create_engine
            from store.db import database_url
            folder = Path(tempfile.gettempdir()) / f"renkei-pg-features-{os.getpid()}"
            url = database_url(folder).replace("postgresql://", "postgresql+psycopg://", 1)
            # A pool of its own: the test mode turns pooling off for the hundreds of stores
            # a run makes, but these servers are hammered like a production worker.
            _ENGINE["engine"] = create_engine(url, connect_args={"prepare_threshold": None},
                                              pool_size=4, max_overflow=4)
        return _ENGINE["engine"]


def ogcapi_options() -> dict:
    return {"engine": engine()} if active() else {}


def as_published(collection: dict) -> dict:
    """The collection dict as the catalogue lists it in this mode."""
    if not active() or str(collection["path"]).startswith("postgis:"):
        return collection
    return {**collection, "path": "postgis:" + load(collection["path"],
                                                     collection.get("layer", "features"))}


def listing(list_collections):
    return lambda: [as_published(c) for c in list_collections()]


def load(path, layer: str = "features") -> str:
    """The PostGIS table holding this GeoPackage layer (loaded on first use)."""
    import pyogrio
    from store import features_pg
    st = os.stat(path)
    key = (os.path.abspath(path), layer, st.st_mtime_ns, st.st_size)
    with _LOCK:
        table = _LOADED.get(key)
    if table is not None:
        return table
    cid = "test:" + hashlib.sha1(repr(key).encode()).hexdigest()
    frame = pyogrio.read_dataframe(path, layer=layer, fid_as_index=True)
    frame = frame.sort_index()
    with features_pg.PostGISWriter(None, cid, 1, engine=engine()) as writer:
        writer.append(frame)
        written = writer.commit()
    with _LOCK:
        _LOADED[key] = written.layer
    return written.layer


def read_version(data_dir, path: str, layer: str = "features"):
    """A published version as a GeoDataFrame in fid order, from whichever store holds it."""
    import geopandas as gpd
    from store import features_pg
    if not features_pg.is_postgis(path):
        return gpd.read_file(Path(data_dir) / path, layer=layer)
    table = features_pg.table_of(path)
    with features_pg.engine_for(data_dir).connect() as conn:
        frame = gpd.read_postgis(f'SELECT * FROM "{table}" ORDER BY fid', conn, geom_col="geom")
    return frame.drop(columns="fid").rename_geometry("geometry")
