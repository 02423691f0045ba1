"""Feature versions in PostgreSQL mode: one PostGIS table per collection version.

The layout is fixed (/work/notes/PGMODE.md, shared with the tiles and hazard code): a version
of collection C is the table `f_<sha1(C)[:20]>_v<N>` in the connection's current schema, with
`fid bigint primary key` (1..n in source order, the OGC API id, as the GeoPackage fid), `geom
geometry(<type>,4326)` under a GiST index, then the properties with the GeoPackage's names and
order, typed bigint/double precision/boolean/text. `Collection.path` is `postgis:<table>`.
A version of store.point_grid.MIN_ROWS rows or more has a counting grid beside it (`c_…` and
`g_…`, written in the same transaction and dropped with it): store.point_grid's for points,
store.box_grid's for polygons and lines, whose cells also keep each row's Feature text.

`PostGISWriter` has VersionWriter's interface (append frames, commit) and is chosen by
store.versions when the store is PostgreSQL, so harvests, uploads and the streaming path write
here without knowing it. The whole write is one transaction: rows arrive by COPY into a
temporary table, the version table is written from it once in spatial order (PostGIS sorts
geometries along a Hilbert curve), then its key and GiST index are built, and a writer that
fails leaves nothing behind. Spatial order is what makes a bbox cheap: the ~50,000 points of a
1 % box over 5M points sit on ~1,900 heap pages instead of ~46,000 (one page each in source
order), 29 ms instead of 1.3 s cold. Every reader that needs source order asks for it (ORDER
BY fid, through the key).

Readers (the OGC API provider, downloads) read one version inside one transaction, which holds
an ACCESS SHARE lock on its table. A request chooses its version (the collection's table) a
moment before that transaction begins, so a publish does not drop the version it supersedes at
once: it marks it with a comment holding the database's clock, and a later publish's sweep
(`drop_superseded`) drops it once RENKEI_DROP_GRACE seconds (default 300, more than a request
may last) have passed. A request that chose the old version just before the switch thus reads
it whole, never a missing table. The DROP itself has a short lock_timeout: if a reader still
holds the table, it is left for the next sweep rather than making the publish (or new readers
queued behind the DROP) wait. RENKEI_DROP_GRACE=0 drops at the switch when no reader holds it.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from typing import TYPE_CHECKING

import numpy as np

from store import box_grid, point_grid

if TYPE_CHECKING:
    import geopandas as gpd

LOGGER = logging.getLogger(__name__)
PREFIX = "postgis:"
SUPERSEDED = "renkei:superseded"
# How long a DROP may wait for readers before it is left to a later sweep (ms).
DROP_LOCK_TIMEOUT_MS = 200
GRACE_ENV = "RENKEI_DROP_GRACE"
DEFAULT_GRACE_S = 300
# PostgreSQL truncates identifiers longer than this (bytes, NAMEDATALEN - 1).
MAX_IDENT_BYTES = 63
SQL_TYPES = {"integer": "bigint", "number": "double precision", "boolean": "boolean",
             "string": "text"}
_TABLE = re.compile(r"^f_[0-9a-f]{20}_v[0-9]+$")
_ENGINES: dict = {}
_ENGINES_LOCK = threading.Lock()


def table_name(collection_id: str, version: int) -> str:
    return f"f_{_digest(collection_id)}_v{int(version)}"


def tiles_table_name(collection_id: str, version: int) -> str:
    """The version's tile pyramid table (written by the tiles code, dropped with the version)."""
    return f"t_{_digest(collection_id)}_v{int(version)}"


def _digest(collection_id: str) -> str:
    return hashlib.sha1(collection_id.encode("utf-8")).hexdigest()[:20]


def is_postgis(path: str | None) -> bool:
    """True for a collection path that names a PostGIS table (`postgis:<table>`)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def table_of(path: str) -> str:
    """The table a `postgis:` path names, checked against the layout (it is spliced into SQL
    as a quoted identifier, so only names we make are accepted)."""
    table = path[len(PREFIX):] if is_postgis(path) else path
    if not _TABLE.match(table):
        raise ValueError(f"not a feature table name: {table!r}")
    return table


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def enabled(data_dir) -> bool:
    """Whether the store of this data dir keeps its features in PostGIS."""
    from store.db import database_url, is_postgresql
    return is_postgresql(database_url(data_dir))


def engine_for(data_dir):
    """One engine per database URL and process (the URL carries the test schema, if any)."""
    from store.db import database_url, make_engine
    url = database_url(data_dir)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = make_engine(url)
    return engine


# -- writing --------------------------------------------------------------------------------

_GEOM_NAMES = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint",
               5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}
_MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}


class PostGISWriter:
    """Append frames (EPSG:4326) to a new version table inside one transaction; `commit()`
    builds the GiST index and commits. Leaving the `with` block without a commit rolls the
    whole table back."""

    def __init__(self, data_dir, collection_id: str, version: int, *,
                 promote_to_multi: bool | None = None, engine=None, on_commit=None):
        self.engine = engine if engine is not None else engine_for(data_dir)
        self.on_commit = on_commit   # called with the writer once the table is committed
        self.collection_id = collection_id
        self.table = table_name(collection_id, version)
        self.promote_to_multi = promote_to_multi
        self.count = 0
        self.fields: dict | None = None
        self._columns: list[str] = []
        self._geom_type: str | None = None
        self._bounds: list = []
        self._conn = None
        self._raw = None
        self._committed = False
        self._staging = staging_table(self.table)

    def __enter__(self) -> "PostGISWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None and not self._committed:
            self._conn.rollback()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _begin(self, frame: "gpd.GeoDataFrame") -> None:
        from store.written import field_types
        self.fields = field_types(frame)
        self._columns = [str(c) for c in frame.columns if c != frame.geometry.name]
        for name in self._columns:
            if len(name.encode("utf-8")) > MAX_IDENT_BYTES:
                raise ValueError(f"column name longer than PostgreSQL allows "
                                 f"({MAX_IDENT_BYTES} bytes): {name[:20]}…")
        self._geom_type = self._type_of(frame)
        self._conn = self.engine.connect()
        self._raw = self._conn.connection.driver_connection
        cols = ", ".join(f"{quote_ident(n)} {SQL_TYPES[self.fields[n]]}" for n in self._columns)
        with self._raw.cursor() as cur:
            # Temporary: no WAL for rows written twice, and gone with the transaction.
            cur.execute(f"CREATE TEMPORARY TABLE {quote_ident(self._staging)} (fid bigint, "
                        f"geom geometry({self._geom_type}, 4326){', ' + cols if cols else ''})"
                        " ON COMMIT DROP")

    def _type_of(self, frame) -> str:
        import shapely
        geoms = frame.geometry.values
        ids = shapely.get_type_id(geoms)
        kinds = {_GEOM_NAMES.get(int(i), "Geometry") for i in np.unique(ids[ids >= 0])}
        z = bool(shapely.has_z(geoms).any())
        if self.promote_to_multi or (self.promote_to_multi is None and len(kinds) == 2
                                     and any(_MULTI.get(k) in kinds for k in kinds)):
            kinds = {_MULTI.get(k, k) for k in kinds}
        kind = kinds.pop() if len(kinds) == 1 else "Geometry"
        return kind + ("Z" if z else "")

    def append(self, frame: "gpd.GeoDataFrame") -> None:
        frame = frame.reset_index(drop=True)
        if self._conn is None:
            self._begin(frame)
        if not len(frame):
            return
        geoms = self._geometries(frame)
        columns = [_values(frame[name], self.fields[name]) for name in self._columns]
        fids = range(self.count + 1, self.count + len(frame) + 1)
        names = ", ".join(["fid", "geom", *map(quote_ident, self._columns)])
        with self._raw.cursor() as cur:
            with cur.copy(f"COPY {quote_ident(self._staging)} ({names}) FROM STDIN") as copy:
                for row in zip(fids, geoms, *columns):
                    copy.write_row(row)
        self.count += len(frame)
        self._bounds.append(frame.total_bounds)

    def _geometries(self, frame) -> list:
        """Hex EWKB per row (COPY's text input for geometry); empty geometries as NULL, as the
        GeoPackage path serves them (GeoJSON has no empty geometry)."""
        import shapely
        g = frame.geometry.values.to_numpy() if hasattr(frame.geometry.values, "to_numpy") \
            else np.asarray(frame.geometry.values)
        g = np.where(shapely.is_empty(g) | shapely.is_missing(g), None, g)
        if self._geom_type.startswith("Multi"):
            single = shapely.get_type_id(g) == {"MultiPoint": 0, "MultiLineString": 1,
                                                "MultiPolygon": 3}[self._geom_type.rstrip("Z")]
            if single.any():
                maker = {"MultiPoint": shapely.multipoints,
                         "MultiLineString": shapely.multilinestrings,
                         "MultiPolygon": shapely.multipolygons}[self._geom_type.rstrip("Z")]
                g = g.copy()
                g[single] = [maker([x]) for x in g[single]]
        elif self._geom_type != "Geometry":
            kinds = {_GEOM_NAMES.get(int(i)) for i in np.unique(shapely.get_type_id(g))
                     if i >= 0}
            if kinds - {self._geom_type.rstrip("Z")}:
                self._widen_geometry()
        g = shapely.set_srid(g, 4326)
        return shapely.to_wkb(g, hex=True, include_srid=True).tolist()

    def _widen_geometry(self) -> None:
        """A later chunk brought another geometry type: the column takes any type (rare; the
        rows written so far are rewritten once)."""
        with self._raw.cursor() as cur:
            cur.execute(f"ALTER TABLE {quote_ident(self._staging)} ALTER COLUMN geom "
                        "TYPE geometry(Geometry, 4326)")
        self._geom_type = "Geometry"

    def commit(self):
        from store.written import WrittenVersion
        if self._conn is None:
            raise ValueError("a version needs at least one frame, even an empty one")
        with self._raw.cursor() as cur:
            write_version_table(lambda sql: cur.execute(sql), self._staging, self.table)
        self._raw.commit()
        self._committed = True
        try:
            self._raw.autocommit = True
            vacuum(self._raw.execute, self.table)
        except Exception as err:   # readers still get the same answers, only slower
            LOGGER.warning("VACUUM of %s failed: %s", self.table, err)
        finally:   # the connection goes back to the pool as it came
            self._raw.autocommit = False
        if self.on_commit is not None:
            self.on_commit(self)
        b = np.array(self._bounds)
        bbox = ([float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
                 float(b[:, 3].max())] if len(self._bounds) and np.isfinite(b).all() else None)
        return WrittenVersion(PREFIX + self.table, self.table, self.count, bbox,
                              self.fields or {})


def vacuum(execute, table: str) -> None:
    """VACUUM a version table just committed and its grid's cells, outside any transaction
    (`execute` in autocommit). Sets the visibility map, so that the cells' index and the key
    answer without the heap, and every row's hint bits, which the first reader of each page
    would otherwise write: a cold page of 1,000 stored polygon texts read 90 ms before, 26
    after. Without it answers are the same, only slower until autovacuum gets there."""
    for name in (table, point_grid.companions(table)[0]):
        if execute(f"SELECT to_regclass('{quote_ident(name)}')").fetchone()[0] is not None:
            execute(f"VACUUM {quote_ident(name)}")


def staging_table(table: str) -> str:
    """The temporary table a version's rows arrive in before write_version_table."""
    return "load_" + table


def write_version_table(execute, staging: str, table: str) -> None:
    """The version table `table` from the rows of the temporary table `staging`, in spatial
    order, with its key and GiST index (both built once over the whole table: faster and
    tighter than row by row), inside the caller's transaction. `execute` runs one statement."""
    t = quote_ident(table)
    # A table of this version left by a write that was never switched to.
    execute(f"DROP TABLE IF EXISTS {t}")
    execute(f"CREATE TABLE {t} AS SELECT * FROM {quote_ident(staging)} ORDER BY geom")
    execute(f"DROP TABLE {quote_ident(staging)}")
    execute(f"ALTER TABLE {t} ADD PRIMARY KEY (fid)")
    execute(f"CREATE INDEX {quote_ident(table + '_geom')} ON {t} USING gist (geom)")
    execute(f"ANALYZE {t}")
    point_grid.build(execute, table) or box_grid.build(execute, table)


def _values(series, kind: str) -> list:
    """Python values for COPY: NaN and NaT as NULL (SQLite stores NaN as NULL too), numpy
    scalars as Python ones, dates as ISO text, anything else in a text column as its text."""
    import pandas as pd
    if kind == "string":
        if getattr(series.dtype, "kind", "O") == "M":
            return [None if pd.isna(v) else v.isoformat() for v in series]
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
                or v is pd.NaT else (v if isinstance(v, str) else str(v))
                for v in series.tolist()]
    mask = series.isna().to_numpy()
    values = series.astype(object).where(~mask, None).tolist()
    if kind == "integer":
        return [None if v is None else int(v) for v in values]
    if kind == "number":
        return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]
    return [None if v is None else bool(v) for v in values]


# -- dropping -------------------------------------------------------------------------------

def version_tables(conn, collection_id: str) -> list[str]:
    """Feature tables of a collection's versions in the current schema."""
    from sqlalchemy import text
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE :p "
        "AND c.relnamespace = current_schema()::regnamespace"),
        {"p": f"f\\_{_digest(collection_id)}\\_v%"}).scalars()
    return [r for r in rows if _TABLE.match(r)]


def footprint(engine) -> tuple[list[tuple[str, int, bool]], int]:
    """Every version table of the current schema as (table, bytes with its grid, tile pyramid
    and all their indexes, marked superseded?), largest first; and PostgreSQL's
    shared_buffers in bytes. `renkei db size` compares them: a bbox page of a large version
    reads a few hundred of its pages at random, fastest from the buffers, slower through the
    OS page cache, slowest from the disk."""
    from sqlalchemy import text
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.relname, pg_total_relation_size(c.oid), "
            "coalesce(obj_description(c.oid, 'pg_class') LIKE :mark, false) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace "
            "AND c.relname ~ '^[fctg]_[0-9a-f]{20}_v[0-9]+$'"),
            {"mark": SUPERSEDED + "%"}).all()
        buffers = conn.execute(text(
            "SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar()
        conn.rollback()
    sizes, superseded = {}, {}
    for name, size, marked in rows:
        table = "f_" + name[2:]   # a companion counts with its version
        sizes[table] = sizes.get(table, 0) + size
        if name == table:
            superseded[table] = bool(marked)
    out = [(t, n, superseded.get(t, False)) for t, n in sizes.items()]
    return sorted(out, key=lambda r: (-r[1], r[0])), int(buffers)


def grace_seconds() -> float:
    import os
    value = os.environ.get(GRACE_ENV)
    try:
        return max(0.0, float(value)) if value else float(DEFAULT_GRACE_S)
    except ValueError:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds, not {value!r}") from None


def drop_versions(data_dir, collection_id: str, keep: str | None, *, engine=None) -> int:
    """Retire a collection's version tables but `keep` (a `postgis:` path, or None: all), once
    the switch has committed: marked now, dropped by a later sweep after the grace period (at
    once with no grace, unless a reader holds them). Returns how many were dropped now."""
    engine = engine if engine is not None else engine_for(data_dir)
    keep_table = table_of(keep) if is_postgis(keep) else None
    with engine.connect() as conn:
        tables = [t for t in version_tables(conn, collection_id) if t != keep_table]
        conn.rollback()
    grace = grace_seconds()
    if grace == 0:
        dropped = sum(_drop(engine, t) for t in tables)
    else:
        dropped = 0
        for t in tables:
            _mark(engine, t)
    drop_superseded(engine, grace)
    return dropped


def drop_superseded(engine, grace: float | None = None) -> int:
    """Drop the superseded tables whose grace period is over (the readers that chose them
    are done), and those an earlier drop had to leave to readers."""
    from sqlalchemy import text
    grace = grace_seconds() if grace is None else grace
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class'), extract(epoch FROM now()) "
            "FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'f\\_%' "
            "AND c.relnamespace = current_schema()::regnamespace "
            "AND obj_description(c.oid, 'pg_class') LIKE :mark"),
            {"mark": SUPERSEDED + "%"}).all()
        conn.rollback()
    due = []
    for table, comment, now in rows:
        since = comment[len(SUPERSEDED):].strip()
        try:
            due_at = float(since) + grace
        except ValueError:
            due_at = 0.0   # marked without a time: a drop left to readers
        if _TABLE.match(table) and float(now) >= due_at:
            due.append(table)
    return sum(_drop(engine, t, mark=False) for t in due)


def _mark(engine, table: str, since: bool = True) -> bool:
    """Comment the table superseded (since the database's now); COMMENT takes a lock readers
    do not conflict with. False if it could not (then a later publish retries)."""
    from sqlalchemy import exc, text
    try:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(DROP_LOCK_TIMEOUT_MS)}ms'"))
            stamp = conn.execute(text("SELECT floor(extract(epoch FROM now()))::bigint")
                                 ).scalar() if since else None
            mark = SUPERSEDED + (f" {stamp}" if since else "")
            conn.execute(text(f"COMMENT ON TABLE {quote_ident(table)} IS '{mark}'"))
        return True
    except exc.OperationalError:
        LOGGER.warning("table %s could not be marked superseded", table)
        return False


def _drop(engine, table: str, mark: bool = True) -> bool:
    from sqlalchemy import exc, text
    # With the version go its tile pyramid and its grid.
    tables = [table, "t_" + table[2:], *point_grid.companions(table)]
    try:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(DROP_LOCK_TIMEOUT_MS)}ms'"))
            conn.execute(text(f"DROP TABLE IF EXISTS {', '.join(map(quote_ident, tables))}"))
        return True
    except exc.OperationalError as err:
        if "lock timeout" not in str(err) and "lock_timeout" not in str(err):
            raise
        LOGGER.info("table %s still read; left for a later sweep", table)
    if mark:
        _mark(engine, table, since=False)
    return False


def drop_table(data_dir, path: str, *, engine=None) -> bool:
    """Drop one version table (a version written but never switched to)."""
    return _drop(engine if engine is not None else engine_for(data_dir), table_of(path))


# -- reading whole versions (downloads, the attribute table) --------------------------------

class VersionRows:
    """The rows of one version table in fid order, read in chunks through a server-side
    cursor inside ONE transaction, opened before the status line and held until the body is
    sent: a republish cannot drop the table mid-stream (its DROP waits or is retried later),
    so a client gets the whole old version, never a torn one."""

    def __init__(self, engine, path: str, chunk: int = 2000):
        self.table = table_of(path)
        self.chunk = chunk
        self._conn = engine.connect()
        try:
            raw = self._conn.connection.driver_connection
            with raw.cursor() as cur:
                cur.execute(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                    "ORDER BY a.attnum", [quote_ident(self.table)])
                cols = [(n, t) for n, t in cur.fetchall() if n not in ("fid", "geom")]
                if not cols and cur.rowcount == 0:
                    raise LookupError(f"no table {self.table}")
            self.names = [n for n, _ in cols]
            self.booleans = {n for n, t in cols if t == "boolean"}
            select = ", ".join([*(quote_ident(n).replace("%", "%%") for n in self.names),
                                "ST_AsBinary(geom)"])
            self._cursor = raw.cursor(name="renkei_rows")
            self._cursor.execute(f"SELECT {select} FROM {quote_ident(self.table)} ORDER BY fid",
                                 [])
            self.first = self._cursor.fetchmany(chunk)   # an unreadable table fails here
        except Exception:
            self.close()
            raise

    def chunks(self):
        """Lists of (properties dict, shapely geometry or None), `chunk` rows at a time."""
        import shapely
        try:
            rows = self.first
            while rows:
                geoms = shapely.from_wkb([None if r[-1] is None else bytes(r[-1]) for r in rows])
                yield [(dict(zip(self.names, r[:-1])), g) for r, g in zip(rows, geoms)]
                rows = self._cursor.fetchmany(self.chunk)
        finally:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()
                self._conn = None


def attribute_page(engine, path: str, offset: int, rows: int) -> tuple[list[str], list[list]]:
    """Columns and rows (no geometry) of one page of a version, by fid range (fid = row)."""
    table = table_of(path)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(f"SELECT * FROM {quote_ident(table)} WHERE fid > %s ORDER BY fid "
                        "LIMIT %s", [int(offset), int(rows)])
            names = [d.name for d in cur.description]
            data = cur.fetchall()
        conn.rollback()
    keep = [i for i, n in enumerate(names) if n not in ("fid", "geom")]
    return [names[i] for i in keep], [[r[i] for i in keep] for r in data]


def write_geopackage(rows: VersionRows, target, layer: str = "features") -> None:
    """The version as a GeoPackage file (for the download), chunk by chunk."""
    import geopandas as gpd
    import pyogrio
    first = True
    for chunk in rows.chunks():
        frame = gpd.GeoDataFrame([p for p, _ in chunk], columns=rows.names,
                                 geometry=[g for _, g in chunk], crs="EPSG:4326")
        pyogrio.write_dataframe(frame, target, layer=layer, driver="GPKG", append=not first,
                                promote_to_multi=None)
        first = False
    if first:
        frame = gpd.GeoDataFrame({n: [] for n in rows.names}, geometry=[], crs="EPSG:4326")
        pyogrio.write_dataframe(frame, target, layer=layer, driver="GPKG")
