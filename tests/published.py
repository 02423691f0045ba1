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
