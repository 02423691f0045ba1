"""Vector tiles of collection versions stored in PostGIS (PostgreSQL mode).

The same two paths as the embedded mode (store.tiles), with the database in place of files, so
a web server with no data directory serves them:

- a large version's pyramid (z0..PREGEN_MAXZOOM) is made at publish time by tippecanoe, as in
  the embedded mode, from the version's table streamed as GeoJSON text built by PostGIS, and
  stored in the table ``t_<hash>_v<N>`` beside the features' ``f_<hash>_v<N>`` (MBTiles
  columns and semantics: rows counted from the bottom, tiles gzipped once);
- any other tile is cut per request by ST_AsMVT over ST_AsMVTGeom, the GiST index of the
  version's table finding the candidates: same layer name, feature ids, properties (nulls left
  out), extent and buffer as the embedded encoder.

Every read of one tile happens in one transaction, so the version's tables stay (ACCESS SHARE)
until it ends even if a publish supersedes them meanwhile.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import tempfile
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from store import tiles as store_tiles
from store.features_pg import PREFIX

LOGGER = logging.getLogger(__name__)
FEATURE_ID = "fid"
GEOMETRY = "geom"
_TABLE = re.compile(r"^[ft]_[0-9a-f]{20}_v[0-9]+$")
_MAX_FEATURES = 50_000     # per tile cut per request, as the embedded path
_STREAM_ROWS = 5_000       # rows per fetch on the way to tippecanoe


def pyramid_table(feature_table: str) -> str:
    """``t_<hash>_v<N>`` of the version table ``f_<hash>_v<N>`` (notes/PGMODE.md)."""
    return "t_" + _checked(feature_table)[2:]


def _checked(table: str) -> str:
    # Table names are made by us (store.features_pg.table_name); anything else never reaches SQL.
    if not _TABLE.match(table or ""):
        raise ValueError(f"not a version table: {table!r}")
    return table


def quote_ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


# -- what a version table holds (immutable per version: cached per database and table) --------

_COLUMNS: dict = {}
_ZOOMS: dict = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 4096


def _cache_key(conn, table):
    # Two data dirs (schemas) of one database can hold a table of the same name: the key is
    # the connection's URL (its search_path included) and the table.
    return (conn.engine.url.render_as_string(hide_password=True), table)


def _remember(cache, key, value):
    with _CACHE_LOCK:
        if len(cache) >= _CACHE_MAX:
            cache.pop(next(iter(cache)))
        cache[key] = value
    return value


def columns(conn, table: str) -> list[tuple[str, str]]:
    """(name, PostgreSQL type) of a version's property columns, in table order."""
    key = _cache_key(conn, table)
    found = _COLUMNS.get(key)
    if found is not None:
        return found
    rows = conn.execute(text(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum"), {"t": _checked(table)}).all()
    if not rows:
        return []   # gone (superseded and dropped): not cached
    return _remember(_COLUMNS, key, [(n, t) for n, t in rows if n not in (FEATURE_ID, GEOMETRY)])


def zoom_range(conn, feature_table: str) -> tuple[int, int] | None:
    """(minzoom, maxzoom) of the version's pre-generated pyramid, or None if it has none."""
    key = _cache_key(conn, feature_table)
    if key in _ZOOMS:
        return _ZOOMS[key]
    # The zooms tippecanoe was asked for, recorded on the table: a zoom where it wrote no tile
    # (features too small to show) is empty, not cut per request over the whole table.
    note = conn.execute(text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
                        {"t": pyramid_table(feature_table)}).scalar()
    try:
        meta = json.loads(note) if note else None
        found = (int(meta["minzoom"]), int(meta["maxzoom"])) if meta else None
    except (ValueError, KeyError, TypeError):
        found = None
    return _remember(_ZOOMS, key, found)


# -- reading one tile --------------------------------------------------------------------------

def render(engine, path: str, layer: str, z: int, x: int, y: int) -> tuple[bytes, bool]:
    """(tile, gzipped?) of the version at ``path`` (``postgis:<table>``), b'' when empty: the
    pyramid's stored tile within its zooms, else one cut per request."""
    table = _checked(str(path)[len(PREFIX):])
    with engine.connect() as conn:
        zooms = zoom_range(conn, table)
        if zooms is not None and zooms[0] <= z <= zooms[1]:
            data = stored_tile(conn, table, z, x, y) or b""
            return data, data[:2] == b"\x1f\x8b"
        return cut_tile(conn, table, layer, z, x, y), False


def stored_tile(conn, feature_table: str, z: int, x: int, y: int) -> bytes | None:
    tms_y = (1 << z) - 1 - y   # MBTiles rows count from the bottom (TMS)
    data = conn.execute(text(
        f"SELECT tile_data FROM {quote_ident(pyramid_table(feature_table))}"
        " WHERE zoom_level = :z AND tile_column = :x AND tile_row = :y"),
        {"z": z, "x": x, "y": tms_y}).scalar()
    return bytes(data) if data is not None else None


def cut_tile(conn, table: str, layer: str, z: int, x: int, y: int,
             limit: int = _MAX_FEATURES) -> bytes:
    """One MVT tile (raw protobuf) cut by PostGIS; b'' when no feature reaches the tile.

    Candidates come from the GiST index on the lon/lat geometry (the buffered tile's envelope
    taken back to 4326); ST_AsMVTGeom projects, clips to the buffer and snaps to the grid.
    A tile over ``MAX_TILE_BYTES`` is cut again with fewer features (tippecanoe's rule for the
    pyramid: drop rather than send a tile clients choke on)."""
    cols = "".join(f", t.{quote_ident(n)}" for n, _ in columns(conn, table))
    margin = store_tiles.BUFFER / store_tiles.EXTENT
    sql = text(
        f"SELECT ST_AsMVT(q, :layer, {store_tiles.EXTENT}, 'geom', 'fid') FROM ("
        f" SELECT t.{FEATURE_ID} AS fid, ST_AsMVTGeom(ST_Transform(t.{GEOMETRY}, 3857),"
        f" ST_TileEnvelope(:z, :x, :y), {store_tiles.EXTENT}, {store_tiles.BUFFER}, true)"
        f" AS geom{cols}"
        f" FROM {quote_ident(table)} t"
        f" WHERE t.{GEOMETRY} && ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => :m), 4326)"
        f" ORDER BY t.{FEATURE_ID} LIMIT :limit) q WHERE q.geom IS NOT NULL")
    while True:
        data = conn.execute(sql, {"layer": layer, "z": z, "x": x, "y": y, "m": margin,
                                  "limit": limit}).scalar()
        data = bytes(data or b"")
        if len(data) < store_tiles.MAX_TILE_BYTES or limit <= 1:
            return data
        limit = max(1, int(limit * store_tiles.MAX_TILE_BYTES / len(data) * 0.9))


# -- the pyramid, written at publish time --------------------------------------------------------

def write_pyramid(engine, feature_table: str, *, name: str,
                  maxzoom: int = store_tiles.PREGEN_MAXZOOM, threads: int | None = None,
                  workdir: Path | str | None = None) -> dict:
    """Pre-generate the pyramid of a version table into ``t_<hash>_v<N>``, committed before
    the catalogue switches to the version (readers find the tiles of any version they see).
    Returns tippecanoe's metadata. The MVT layer is called ``name`` (the collection id)."""
    table = _checked(feature_table)
    with tempfile.TemporaryDirectory(prefix="renkei-tiles-", dir=workdir) as tmp:
        seq, mbtiles = Path(tmp) / "features.geojsons", Path(tmp) / "tiles.mbtiles"
        _write_features(engine, table, seq)
        store_tiles.run_tippecanoe(seq, mbtiles, name=name, id_property=FEATURE_ID,
                                   maxzoom=maxzoom, threads=threads)
        seq.unlink()
        meta = store_tiles.read_metadata(mbtiles)
        _copy_pyramid(engine, mbtiles, pyramid_table(table),
                      {"minzoom": int(meta.get("minzoom", 0)),
                       "maxzoom": int(meta.get("maxzoom", maxzoom))})
    with _CACHE_LOCK:
        _ZOOMS.clear()   # a retried version may have cached "no pyramid"
    return meta


def _write_features(engine, table: str, out: Path) -> None:
    """The version as GeoJSON text sequences, one Feature per line made by PostGIS (its fid a
    property, which tippecanoe turns into the feature id), streamed by a server-side cursor."""
    sql = text(f"SELECT ST_AsGeoJSON(t.*, '{GEOMETRY}') FROM {quote_ident(table)} t"
               f" ORDER BY t.{FEATURE_ID}")
    with engine.connect() as conn, open(out, "w", encoding="utf-8") as fh:
        result = conn.execution_options(stream_results=True, yield_per=_STREAM_ROWS).execute(sql)
        for part in result.partitions():
            fh.write("\n".join(r[0] for r in part))
            fh.write("\n")


def _copy_pyramid(engine, mbtiles: Path, tiles_table: str, zooms: dict) -> None:
    """tippecanoe's raw tiles into ``tiles_table`` by COPY, gzipped on the way
    (store.tiles.gzipped_tiles: one read of the MBTiles), in one transaction, its zooms
    recorded as the table's comment."""
    t = quote_ident(tiles_table)
    src = sqlite3.connect(mbtiles)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {t}"))   # a failed earlier attempt
            conn.execute(text(f"CREATE TABLE {t} (zoom_level smallint NOT NULL,"
                              " tile_column integer NOT NULL, tile_row integer NOT NULL,"
                              " tile_data bytea NOT NULL)"))
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(
                    f"COPY {t} (zoom_level, tile_column, tile_row, tile_data) FROM STDIN") as cp:
                for row in store_tiles.gzipped_tiles(src):
                    cp.write_row(row)
            conn.execute(text(f"ALTER TABLE {t} ADD PRIMARY KEY"
                              " (zoom_level, tile_column, tile_row)"))
            # COMMENT takes a literal only; the text is ours (two integers).
            note = json.dumps(zooms).replace("'", "''")
            conn.execute(text(f"COMMENT ON TABLE {t} IS '{note}'"))
    finally:
        src.close()


def publish_pyramid(engine, feature_table: str, *, name: str, count: int) -> bool:
    """The publish-time step of a version table: its pyramid when the version is large
    (``store.tiles.pregen_min_features``). Without it the version is still served, tiled per
    request: slower, never wrong, so a failure is logged, not raised. True if written."""
    if count < store_tiles.pregen_min_features():
        return False
    try:
        write_pyramid(engine, feature_table, name=name)
        return True
    except (RuntimeError, OSError, SQLAlchemyError) as err:
        LOGGER.warning("collection %s: tiles not pre-generated (%s); served per request",
                       name, err)
        return False


def drop_pyramid(conn, feature_table: str) -> None:
    """Drop the pyramid of a superseded version (the caller holds the dropper's lock_timeout)."""
    conn.execute(text(f"DROP TABLE IF EXISTS {quote_ident(pyramid_table(feature_table))}"))
