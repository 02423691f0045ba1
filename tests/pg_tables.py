"""Version tables in PostGIS for tests of the PostgreSQL read paths, laid out exactly as
notes/PGMODE.md says the feature writer makes them (fid bigint primary key 1..n, geom
geometry(<type>,4326) with a GiST index, then the GeoPackage's property columns, in its order,
typed bigint/double precision/boolean/text), loaded from a GeoPackage version by COPY.

A throwaway database per test session (``scratch_database``) unless the PostgreSQL test mode
gives one.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("RENKEI_TEST_DATABASE",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
_TYPES = {"i": "bigint", "u": "bigint", "f": "double precision", "b": "boolean"}


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def reachable() -> bool:
    try:
        engine = create_engine(_sqlalchemy_url(ADMIN_URL))
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - no server: the tests that need one are skipped
        return False


@contextmanager
def scratch_database():
    """A new database with PostGIS, dropped afterwards; yields its SQLAlchemy engine."""
    name = f"renkei_scratch_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_sqlalchemy_url(ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _sqlalchemy_url(ADMIN_URL).rsplit("/", 1)[0] + "/" + name
    engine = create_engine(url, connect_args={"prepare_threshold": None})
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load_gpkg(engine, gpkg, table: str, layer: str = "features") -> int:
    """Copy one GeoPackage version into ``table`` (layout above); returns the row count."""
    frame = pyogrio.read_dataframe(gpkg, layer=layer, fid_as_index=True)
    geom_type = _geometry_type(frame.geometry.values)
    props = [c for c in frame.columns if c != frame.geometry.name]
    types = []
    for c in props:
        kind = getattr(frame[c].dtype, "kind", "O")
        if str(frame[c].dtype) == "boolean":
            kind = "b"
        types.append(_TYPES.get(kind, "text"))
    cols = "".join(f', "{c}" {t}' for c, t in zip(props, types))
    geoms = frame.geometry.values
    if geom_type == "MultiPolygon":   # as the writer promotes a layer mixing both
        geoms = np.array([shapely.MultiPolygon([g]) if g is not None and g.geom_type == "Polygon"
                          else g for g in geoms], dtype=object)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{table}" (fid bigint PRIMARY KEY,'
                          f' geom geometry({geom_type},4326){cols})'))
        raw = conn.connection.driver_connection
        names = ", ".join(["fid", "geom"] + [f'"{c}"' for c in props])
        with raw.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as cp:
            wkb = shapely.to_wkb(geoms, hex=True, include_srid=False)
            for fid, g, row in zip(frame.index, wkb, frame[props].itertuples(index=False)):
                cp.write_row([int(fid), None if g is None else f"SRID=4326;{g}"]
                             + [_value(v, t) for v, t in zip(row, types)])
        conn.execute(text(f'CREATE INDEX ON "{table}" USING gist (geom)'))
        conn.execute(text(f'ANALYZE "{table}"'))
    return len(frame)


def _geometry_type(geoms) -> str:
    kinds = set(shapely.get_type_id(geoms[~shapely.is_missing(geoms)]).tolist())
    names = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint",
             5: "MultiLineString", 6: "MultiPolygon"}
    if len(kinds) == 1:
        return names.get(kinds.pop(), "Geometry")
    if kinds <= {3, 6}:
        return "MultiPolygon"
    return "Geometry"


def _value(v, type_):
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if type_ == "boolean":
        return bool(v)
    if type_ == "bigint":
        return int(v)
    if type_ == "double precision":
        return float(v)
    return str(v) if not isinstance(v, str) else v
