"""What a published collection version holds, read the way its mode stores it: the GeoPackage
under the data dir (embedded mode), or the PostGIS table of the catalogue's database
(PostgreSQL mode, store.features_pg). Tests take their expectations from here, so both modes are
held to the same answers."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

from store import tiles as store_tiles
from store import tiles_pg
from store.db import Store
from store.features_pg import is_postgis, table_of


def _engine(data_dir):
    return Store(data_dir).engine


def frame(data_dir, path: str) -> gpd.GeoDataFrame:
    """Every feature of the version at ``path`` (a Collection.path), indexed by fid, geometry
    column ``geometry``."""
    if not is_postgis(path):
        return pyogrio.read_dataframe(Path(data_dir) / path, fid_as_index=True)
    from sqlalchemy import text
    engine = _engine(data_dir)
    try:
        with engine.connect() as conn:
            out = gpd.read_postgis(text(f'SELECT * FROM "{table_of(path)}" ORDER BY fid'), conn,
                                   geom_col="geom", index_col="fid")
    finally:
        engine.dispose()
    return out.rename_geometry("geometry")


def bounds(data_dir, path: str):
    if not is_postgis(path):
        return pyogrio.read_info(Path(data_dir) / path)["total_bounds"]
    return frame(data_dir, path).total_bounds


def has_pyramid(data_dir, path: str) -> bool:
    """Whether the version got its tile pyramid at publish time."""
    if not is_postgis(path):
        return store_tiles.tiles_path(Path(data_dir) / path).exists()
    from sqlalchemy import text
    engine = _engine(data_dir)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT to_regclass(:t)"), {
                "t": tiles_pg.pyramid_table(table_of(path))}).scalar() is not None
    finally:
        engine.dispose()


def exists(data_dir, path: str) -> bool:
    """Whether the version is still stored (superseded versions are removed)."""
    if not is_postgis(path):
        return (Path(data_dir) / path).exists()
    from sqlalchemy import text
    engine = _engine(data_dir)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT to_regclass(:t)"),
                                {"t": table_of(path)}).scalar() is not None
    finally:
        engine.dispose()


_PG_DTYPES = {"double precision": "float64", "bigint": "int64", "integer": "int32",
              "boolean": "bool", "text": "object"}


def dtypes(data_dir, path: str) -> dict[str, str]:
    """Property name → stored type, as numpy names it (pyogrio.read_info's `dtypes`)."""
    if not is_postgis(path):
        info = pyogrio.read_info(Path(data_dir) / path)
        return dict(zip(info["fields"], info["dtypes"]))
    from sqlalchemy import text
    engine = _engine(data_dir)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = :t AND table_schema = current_schema()"
                " AND column_name NOT IN ('fid', 'geom') ORDER BY ordinal_position"),
                {"t": table_of(path)}).all()
    finally:
        engine.dispose()
    return {name: _PG_DTYPES.get(kind, kind) for name, kind in rows}


def damage(data_dir, path: str) -> None:
    """Make a stored version unreadable, as a bad sector or a half-restored backup would: the
    GeoPackage overwritten, or the table gone."""
    if not is_postgis(path):
        (Path(data_dir) / path).write_bytes(b"this is not a GeoPackage any more\n" * 64)
        return
    from sqlalchemy import text
    engine = _engine(data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE "{table_of(path)}"'))
    finally:
        engine.dispose()
