"""Theme layers from members stored in PostGIS (PostgreSQL mode).

An area theme (a prefecture's flood polygons: up to a million rows) is built inside the
database: one INSERT … SELECT per member into the new version table, each member's columns cast
to the merged schema as geo.theme_layers.member_frame casts them in the embedded mode, so no
feature passes through Python. Point themes need geo.theme_layers' duplicate merging (tens of
thousands of rows at most): their members are read here, only the theme's columns, and merged in
Python as in the embedded mode.

The new table has the layout of every version (notes/PGMODE.md): fid 1..n in member order, then
each member's fid order; geom under a GiST index; the merged schema's columns, typed.
"""
from __future__ import annotations

from sqlalchemy import text

from geo.themes import THEMES, merged_fields
from store.features_pg import PREFIX, staging_table, table_name, write_version_table
from store.tiles_pg import columns, quote_ident
from store.versions import WrittenVersion

SQL_TYPES = {"integer": "bigint", "number": "double precision", "boolean": "boolean",
             "string": "text"}
_NUMBER_TEXT = r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"


def _cast(column: str, src: str | None, dst: str) -> str:
    """SQL of one member column (PostgreSQL type ``src``; None: the member lacks it) as the
    theme's type ``dst``: numbers from text only when they read as numbers, integers rounded
    (half to even, as numpy), flags only from booleans and 0/1 (geo.theme_layers._flag)."""
    target = SQL_TYPES[dst]
    if src is None:
        return f"NULL::{target}"
    c = f"m.{quote_ident(column)}"
    numeric = src in ("bigint", "integer", "smallint", "double precision", "real", "numeric")
    if dst == "string":
        return c if src == "text" else f"{c}::text"
    if dst == "boolean":
        if src == "boolean":
            return c
        return (f"CASE WHEN {c} = 1 THEN true WHEN {c} = 0 THEN false END" if numeric
                else "NULL::boolean")
    if src == "boolean":
        number = f"{c}::integer::double precision"
    elif numeric:
        number = f"{c}::double precision"
    else:
        number = f"CASE WHEN {c}::text ~ '{_NUMBER_TEXT}' THEN {c}::text::double precision END"
    return f"round({number})::bigint" if dst == "integer" else number


def merge_areas(engine, theme: str, member_tables: list[str], collection_id: str,
                version: int) -> WrittenVersion:
    """The version table of an area theme layer, built from its members' tables in one
    transaction (nothing is visible until it commits)."""
    fields = merged_fields(THEMES[theme])
    table = table_name(collection_id, version)
    t = quote_ident(table)
    names = [f.name for f in fields]
    cols = ", ".join(f"{quote_ident(f.name)} {SQL_TYPES[f.type]}" for f in fields)
    count = 0
    staging = staging_table(table)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TEMPORARY TABLE {quote_ident(staging)} (fid bigint,"
                          f" geom geometry(MultiPolygon, 4326), {cols}) ON COMMIT DROP"))
        for member in member_tables:
            types = dict(columns(conn, member))
            values = [_cast(f.name, types.get(f.name), f.type) for f in fields
                      if f.name != "sources"]
            sources = ("coalesce(" + _cast("publisher", types.get("publisher"), "string")
                       + ", '') || ': ' || coalesce("
                       + _cast("source_dataset", types.get("source_dataset"), "string")
                       + ", '')")
            inserted = conn.execute(text(
                f"INSERT INTO {quote_ident(staging)} (fid, geom, {', '.join(map(quote_ident, names))})"
                f" SELECT :offset + row_number() OVER (ORDER BY m.fid),"
                f" ST_Multi(ST_CollectionExtract(m.geom, 3)), {', '.join(values)}, {sources}"
                f" FROM {quote_ident(member)} m"), {"offset": count}).rowcount
            count += inserted
        write_version_table(lambda sql: conn.execute(text(sql)), staging, table)
        box = conn.execute(text(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            f" FROM (SELECT ST_Extent(geom) AS e FROM {t}) x")).one()
    bbox = [float(v) for v in box] if box[0] is not None else None
    return WrittenVersion(PREFIX + table, table, count, bbox,
                          {f.name: f.type for f in fields})


def read_member(engine, table: str, theme: str):
    """A member's features in its own columns, only those the merged schema takes (as
    geo.theme_layers.read_member does for a GeoPackage), in fid order."""
    import geopandas as gpd
    wanted = {f.name for f in merged_fields(THEMES[theme])}
    with engine.connect() as conn:
        names = [n for n, _ in columns(conn, table) if n in wanted]
        cols = "".join(f"m.{quote_ident(n)}, " for n in names)
        frame = gpd.read_postgis(text(f"SELECT {cols}m.geom FROM {quote_ident(table)} m"
                                      " ORDER BY m.fid"), conn, geom_col="geom")
    return frame.rename_geometry("geometry")
