"""GeoJSON Feature text of a PostGIS version table's rows, built by PostgreSQL (PostgreSQL
mode): the one definition the OGC API provider pages with and the stored texts are written by.

A Feature is `{"type":"Feature","id":<fid>,"geometry":<ST_AsGeoJSON>,"properties":<row_to_json
of the property columns>}`, joined as text: json_build_object would add spaces, and ::json
would parse it again.

A version with a box grid (store.box_grid: 100,000 polygons or lines and more) keeps the
default text of every row in its cells table, written at publish with this SQL: building a
page of 1,000 polygons' text cost ~12 ms of a 22 ms bbox page (row_to_json of ten properties
~6, ST_AsGeoJSON ~3), the part no index saves. It is the text a request without `properties`,
`skipGeometry` or `crs` would have built, byte for byte. It costs storage (about the size of
the GeoJSON, ~600 MB for 900k polygons), which is why points, whose pages were fast enough
already, do not keep theirs.
"""
from __future__ import annotations

from store.point_grid import _q as q

# format_type() names -> JSON Schema types; columns of other types are not properties.
JSON_TYPES = {'bigint': 'integer', 'integer': 'integer', 'smallint': 'integer',
              'double precision': 'number', 'real': 'number', 'numeric': 'number',
              'boolean': 'boolean', 'text': 'string', 'character varying': 'string'}
# The lateral row of a feature's properties (an alias no column name can shadow).
PROPS = '_renkei_props'
# Digits after the point in GeoJSON coordinates: PostGIS prints the shortest text that reads
# back to the same double, capped here, so stored coordinates come out as they went in.
DIGITS = 15


def columns(execute, table: str) -> list[tuple[str, str]]:
    """(name, format_type) of the version table's columns, in order; none if it does not
    exist. `execute(sql)` returns a cursor."""
    literal = q(table).replace("'", "''")
    return execute(
        'SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a '
        f"WHERE a.attrelid = to_regclass('{literal}') AND a.attnum > 0 AND NOT a.attisdropped "
        'ORDER BY a.attnum').fetchall()


def properties(cols) -> dict:
    """{name: JSON type} of the property columns among `cols` (not fid, not geom)."""
    out = {}
    for name, sql_type in cols:
        kind = JSON_TYPES.get(sql_type.split('(')[0])
        if name not in ('fid', 'geom') and kind is not None:
            out[name] = kind
    return out


def feature_sql(table: str, geometry: str | None) -> str:
    """SQL of one Feature's text; `geometry` the SQL of the geometry to write (None: null).
    FROM must be from_sql's."""
    t = q(table)
    geo = "'null'" if geometry is None else f"coalesce(ST_AsGeoJSON({geometry}, {DIGITS}), 'null')"
    return (f"""'{{"type":"Feature","id":' || {t}.fid || ',"geometry":' || {geo} """
            f"""|| ',"properties":' || row_to_json({PROPS})::text || '}}'""")


def from_sql(table: str, names) -> str:
    """The table and, beside each row, the properties `names` as the row PROPS."""
    t = q(table)
    cols = ', '.join(f'{t}.{q(n)} AS {q(n)}' for n in names)
    return f'{t} CROSS JOIN LATERAL (SELECT {cols}) {PROPS}'
