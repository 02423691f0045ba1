"""What the GeoPackage provider keeps between requests: files, schemas, counts, transformers.

pygeoapi builds a provider object per request, so everything that costs (connections, schema,
counts) lives in a FileRegistry keyed by the file's identity (inode, mtime, size). Each OGCAPI
owns its registry and passes it to its providers through the provider definition, so two APIs
in one process (two apps over two data dirs) never close each other's files. Published files
are never modified in place (a new version is a new file), which is what makes ``immutable=1``
and these caches safe. CRS operations and filter geometries depend on nothing but their key,
so those caches are shared by the whole process.
"""

import functools
import math
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from urllib.parse import quote

import numpy as np
import pyproj
import shapely

from pygeoapi.provider.base import ProviderConnectionError, ProviderQueryError

from ogcapi.errors import QueryError

# GPKG header envelope sizes in bytes, indexed by the envelope indicator.
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
# Storage must be lon/lat WGS 84: anything else would be served as CRS84 wrongly.
_LONLAT_SRS = {('EPSG', 4326), ('OGC', 84), ('OGC', 'CRS84')}
_MAX_IDLE_CONNECTIONS = 4
_MAX_CACHED_COUNTS = 512
# numberMatched that no index answers is computed for at most this long, else omitted (OGC API
# Features allows it): a count over 1M rows (~100-300 ms) must not cost more than the page.
DEFAULT_COUNT_BUDGET_MS = 25
# ... and for no longer than the page it goes with took, but at least this long (both modes): a
# count over a small collection (a few ms) is always worth it, even beside a page of 0.2 ms.
COUNT_FLOOR_MS = 5


def page_bounded(budget_ms, page_ms):
    """A count's budget beside a page that took `page_ms`: no longer than the page, nor
    shorter than COUNT_FLOOR_MS (unchanged without a budget or a page)."""
    if budget_ms is None or page_ms is None:
        return budget_ms
    return min(budget_ms, max(COUNT_FLOOR_MS, page_ms))


def last_page_count(offset, limit, returned):
    """numberMatched a results page states without counting: when no row follows it (it
    holds at most `limit` of the limit + 1 rows asked for) and it is not an empty page past
    the end, what precedes it and what it holds is every match; else None."""
    return offset + returned if returned <= limit and (returned or not offset) else None
# SQLite virtual-machine steps between two looks at the clock (~0.1 ms of work).
_PROGRESS_STEPS = 2000
_MAX_FILTER_GEOMS = 64
# SQLite integers are 64-bit: a larger Python int cannot even be bound as a parameter.
SQLITE_INT_RANGE = (-2 ** 63, 2 ** 63 - 1)

_LOCK = threading.Lock()
_TRANSFORMERS = {}  # (source, target) -> pyproj.Transformer
_FILTER_GEOMS = OrderedDict()  # WKB of a filter geometry -> prepared shapely geometry
HYOGO = pyproj.aoi.AreaOfInterest(134.25, 34.15, 135.47, 35.68)
CRS84 = 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'


def wkb(blob):
    """The WKB inside a GPKG geometry blob; None for NULL or empty."""
    if blob is None:
        return None
    if blob[:2] != b'GP':
        return bytes(blob)  # plain WKB, tolerated
    flags = blob[3]
    if flags & 0x10:  # empty geometry: GeoJSON has no empty, so null
        return None
    if flags & 0x20:
        raise ProviderQueryError('extended GeoPackage geometry types are not supported')
    return blob[8 + _ENVELOPE_BYTES.get((flags >> 1) & 7, 0):]


def _point_xy(w):
    """(x, y) of a 2D WKB point without building a shapely object, else None."""
    if len(w) != 21:
        return None
    fmt = '<Idd' if w[0] == 1 else '>Idd'
    kind, x, y = struct.unpack_from(fmt, w, 1)
    return (x, y) if kind == 1 else None


def _polygonal(w):
    """The GeoJSON geometry of a little-endian 2D WKB Polygon or MultiPolygon whose rings are
    closed and of 4 points or more, read with struct: what shapely's __geo_interface__ gives
    (coordinates as tuples), without building shapely objects, which cost ~35 us for one small
    polygon, more than its lookup (issue 17). None for anything else (the caller decodes with
    shapely, whose errors and special cases then apply)."""
    if len(w) < 9 or w[0] != 1:
        return None
    kind, = struct.unpack_from('<I', w, 1)
    if kind == 3:
        rings, at = _rings(w, 5)
        return None if rings is None or at != len(w) else \
            {'type': 'Polygon', 'coordinates': rings}
    if kind != 6:
        return None
    count, = struct.unpack_from('<I', w, 5)
    at, polygons = 9, []
    for _ in range(count):
        if at + 5 > len(w) or w[at] != 1 or struct.unpack_from('<I', w, at + 1)[0] != 3:
            return None
        rings, at = _rings(w, at + 5)
        if rings is None:
            return None
        polygons.append(rings)
    if not polygons or at != len(w):
        return None
    return {'type': 'MultiPolygon', 'coordinates': polygons}


def _rings(w, at):
    """(rings as tuples of (x, y), offset after them) of the WKB polygon body at ``at``, or
    (None, at) when one is empty, short of 4 points, not closed or cut off."""
    if at + 4 > len(w):
        return None, at
    count, = struct.unpack_from('<I', w, at)
    at += 4
    if not count:
        return None, at
    rings = []
    for _ in range(count):
        if at + 4 > len(w):
            return None, at
        n, = struct.unpack_from('<I', w, at)
        at += 4
        if n < 4 or at + 16 * n > len(w):
            return None, at
        xy = struct.unpack_from(f'<{2 * n}d', w, at)
        at += 16 * n
        ring = tuple(zip(xy[::2], xy[1::2]))
        if ring[0] != ring[-1]:
            return None, at
        rings.append(ring)
    return tuple(rings), at


def crs_from_uri(uri):
    """pyproj CRS for an OGC CRS URI (CRS84 is lon/lat, EPSG codes keep EPSG axis order)."""
    if uri in (CRS84, 'urn:ogc:def:crs:OGC:1.3:CRS84'):
        return pyproj.CRS('OGC:CRS84')
    url = uri.replace('urn:ogc:def:crs', 'http://www.opengis.net/def/crs').replace(':', '/')
    try:
        authority, code = url.rsplit('/', maxsplit=3)[1::2]
        return pyproj.CRS.from_authority(authority, code)
    except (ValueError, pyproj.exceptions.CRSError):
        raise ValueError(f'unknown CRS {uri!r}')


def transformer(source, target):
    """A cached transformer between two CRSs given as URIs or WKT.

    Building a Transformer runs PROJ's operation search (up to ~0.8 s for CRS84 -> JGD2011
    without an area of interest), and pyproj rebuilds it in every new thread. The operation
    chosen for Hyogo is kept as a PROJ pipeline, which is instant to rebuild anywhere.
    """
    key = (source, target)
    t = _TRANSFORMERS.get(key)
    if t is None:
        def crs(s):
            return pyproj.CRS.from_wkt(s) if s.lstrip()[:1].isalpha() and '[' in s \
                else crs_from_uri(s)
        op = pyproj.Transformer.from_crs(crs(source), crs(target), area_of_interest=HYOGO)
        t = _TRANSFORMERS[key] = pyproj.Transformer.from_pipeline(op.definition)
    return t


def transform_bbox(source, target, bbox, points=21):
    """Envelope in ``target`` of a 2D bbox given in ``source`` (both in their axis order).

    Edges are densified: a straight edge in one CRS is a curve in another. (pyproj's
    transform_bounds cannot be used on a pipeline-built transformer: it returns inf.)
    """
    minx, miny, maxx, maxy = bbox
    s = np.linspace(0.0, 1.0, points)
    xs = np.concatenate([minx + (maxx - minx) * s, np.full(points, maxx),
                         maxx - (maxx - minx) * s, np.full(points, minx)])
    ys = np.concatenate([np.full(points, miny), miny + (maxy - miny) * s,
                         np.full(points, maxy), maxy - (maxy - miny) * s])
    a, b = transformer(source, target).transform(xs, ys)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        # Only a caller's bbox can lie there: ours are CRS84, defined everywhere.
        raise QueryError('bbox lies outside the area where its CRS is defined')
    return [float(a.min()), float(b.min()), float(a.max()), float(b.max())]


def point_coordinates(blobs):
    """(xs, ys) as float64 arrays when every blob is a 2D little-endian point in the same
    GPKG header layout (what our writer produces), read with numpy in one pass; else None and
    the caller decodes blob by blob. Same doubles as shapely would give."""
    if not blobs or None in blobs:
        return None
    size = len(blobs[0])
    if size < 29 or size > 8 + 64 + 21:
        return None
    try:
        raw = np.frombuffer(b''.join(blobs), dtype=np.uint8)
    except TypeError:
        return None
    if len(raw) != size * len(blobs):
        return None   # not all the same length
    rows = raw.reshape(len(blobs), size)
    flags = rows[0, 3]
    head = 8 + _ENVELOPE_BYTES.get((int(flags) >> 1) & 7, -100)
    if head + 21 != size or flags & 0x30:
        return None   # empty, extended, or a size that is no 2D point
    want = np.frombuffer(b'GP', dtype=np.uint8)
    # WKB: byte order 1 (little endian), geometry type 1 (Point, 2D).
    wkb_head = np.frombuffer(b'\x01\x01\x00\x00\x00', dtype=np.uint8)
    if not ((rows[:, :2] == want).all() and (rows[:, 3] == flags).all()
            and (rows[:, head:head + 5] == wkb_head).all()):
        return None
    xy = rows[:, head + 5:head + 21].copy().view('<f8')
    return xy[:, 0], xy[:, 1]


_ENVELOPES = np.array([_ENVELOPE_BYTES.get(i, -1) for i in range(8)], dtype=np.int64)
# WKB of a 2D polygon of one ring, little endian: byte order 1, type 3, 1 ring.
_POLYGON_HEAD = np.frombuffer(b'\x01\x03\x00\x00\x00\x01\x00\x00\x00', dtype=np.uint8)


def polygon_coordinates(blobs):
    """(coords, (ring offsets, polygon offsets)) as shapely.to_ragged_array gives them, read
    with numpy when every blob is a little-endian 2D polygon of one closed ring of 4 points
    or more (parcels, buildings: what our data mostly holds); else None and the caller
    decodes with shapely, whose errors and special cases then apply as before."""
    if not blobs or None in blobs:
        return None
    try:
        joined = b''.join(blobs)
    except TypeError:
        return None
    n = len(blobs)
    raw = np.frombuffer(joined, dtype=np.uint8)
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    if (sizes < 8 + 13).any():
        return None
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    flags = raw[starts + 3]
    env = _ENVELOPES[(flags >> 1) & 7]
    if ((raw[starts] != 0x47) | (raw[starts + 1] != 0x50) | (flags & 0x30 != 0)
            | (env < 0)).any():
        return None   # not GP, empty or extended, or an unknown envelope
    head = starts + 8 + env   # where the WKB starts
    if (head + 13 > starts + sizes).any():
        return None
    if not (raw[head[:, None] + np.arange(9)] == _POLYGON_HEAD).all():
        return None
    npts = raw[head[:, None] + np.arange(9, 13)].astype(np.int64) @ (1 << np.arange(0, 32, 8))
    if (npts < 4).any() or (head + 13 + 16 * npts != starts + sizes).any():
        return None
    skip = (head - starts + 13).tolist()
    coords = np.frombuffer(b''.join([b[k:] for b, k in zip(blobs, skip)]),
                           dtype='<f8').reshape(-1, 2)
    rings = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(npts, out=rings[1:])
    if not (coords[rings[:-1]] == coords[rings[1:] - 1]).all():
        return None   # a ring that is not closed: shapely says what then
    return coords, (rings, np.arange(n + 1, dtype=np.int64))


def decode(blobs, transformer=None):
    """Shapely geometries of GPKG blobs (None for NULL or empty), transformed if asked."""
    geoms = shapely.from_wkb([wkb(b) for b in blobs])
    if transformer is not None:
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    return geoms


def geometries_to_geojson(blobs, transformer=None):
    """Decode GPKG blobs to GeoJSON geometry dicts, vectorised where it pays.

    Points are the bulk of our data; shapely's per-object __geo_interface__ costs ~5 us each,
    so 2D points take a vectorised coordinate path.
    """
    if transformer is None and len(blobs) == 1 and blobs[0] is not None:
        # One item by id: numpy's set-up would cost more than the point.
        w = wkb(blobs[0])
        xy = _point_xy(w) if w is not None else None
        if xy is not None and math.isfinite(xy[0]) and math.isfinite(xy[1]):
            return [{'type': 'Point', 'coordinates': list(xy)}]
        geom = _polygonal(w) if w is not None else None
        if geom is not None:
            return [geom]
    elif transformer is None:
        xy = point_coordinates(blobs)
        if xy is not None and np.isfinite(xy[0]).all() and np.isfinite(xy[1]).all():
            return [{'type': 'Point', 'coordinates': [x, y]}
                    for x, y in zip(xy[0].tolist(), xy[1].tolist())]
    geoms = decode(blobs, transformer)
    out = [None] * len(geoms)
    is_point = (shapely.get_type_id(geoms) == 0) & ~shapely.has_z(geoms)
    point_idx = is_point.nonzero()[0]
    if len(point_idx):
        xy = shapely.get_coordinates(geoms[point_idx]).tolist()
        for i, c in zip(point_idx.tolist(), xy):
            out[i] = {'type': 'Point', 'coordinates': c}
    for i in (~is_point).nonzero()[0].tolist():
        g = geoms[i]
        if g is not None and not g.is_empty:
            out[i] = g.__geo_interface__
    return out


def _wkb_or_none(blob):
    """A feature's WKB for the SQL functions; an unreadable or empty blob never matches."""
    try:
        return wkb(blob)
    except ProviderQueryError:
        return None


def _sql_intersects_box(blob, minx, miny, maxx, maxy):
    """SQLite function: exact geometry/bbox test for R-tree edge candidates."""
    w = _wkb_or_none(blob)
    if w is None:
        return 0
    xy = _point_xy(w)
    if xy is not None:
        return int(minx <= xy[0] <= maxx and miny <= xy[1] <= maxy)
    return int(shapely.intersects(shapely.from_wkb(w), _box(minx, miny, maxx, maxy)))


def intersects_box(blobs, minx, miny, maxx, maxy):
    """_sql_intersects_box of each blob, as a bool array: points tested as there, the other
    geometries by shapely in one call rather than one SQLite callback and one shapely call
    each (~10 us per edge candidate, ~100 of them in a 1% bbox of small polygons)."""
    out = np.zeros(len(blobs), dtype=bool)
    rest, where = [], []
    for i, blob in enumerate(blobs):
        w = _wkb_or_none(blob)
        if w is None:
            continue
        xy = _point_xy(w)
        if xy is not None:
            out[i] = minx <= xy[0] <= maxx and miny <= xy[1] <= maxy
        else:
            rest.append(w)
            where.append(i)
    if rest:
        out[where] = shapely.intersects(shapely.from_wkb(rest), _box(minx, miny, maxx, maxy))
    return out


@functools.lru_cache(maxsize=64)
def _box(minx, miny, maxx, maxy):
    """The bbox as a geometry, made once per query rather than once per edge candidate (not
    prepared: a prepared geometry builds its index lazily, unsafe across threads)."""
    return shapely.box(minx, miny, maxx, maxy)


def filter_geometry(w):
    """Prepared shapely geometry for a filter literal's WKB (cached: one per query, many rows)."""
    g = _FILTER_GEOMS.get(w)
    if g is None:
        g = shapely.from_wkb(w)
        shapely.prepare(g)
        with _LOCK:
            _FILTER_GEOMS[w] = g
            if len(_FILTER_GEOMS) > _MAX_FILTER_GEOMS:
                _FILTER_GEOMS.popitem(last=False)
    return g


def _sql_intersects_geom(blob, filter_wkb):
    """SQLite function: exact intersection of a feature with a CQL2 geometry literal."""
    w = _wkb_or_none(blob)
    if w is None:
        return 0
    g = filter_geometry(filter_wkb)
    xy = _point_xy(w)
    if xy is not None:
        return int(shapely.intersects_xy(g, *xy))
    return int(shapely.intersects(g, shapely.from_wkb(w)))


_JSON_TYPES = {
    'INTEGER': 'integer', 'INT': 'integer', 'MEDIUMINT': 'integer', 'SMALLINT': 'integer',
    'TINYINT': 'integer', 'BIGINT': 'integer', 'REAL': 'number', 'FLOAT': 'number',
    'DOUBLE': 'number', 'NUMERIC': 'number', 'BOOLEAN': 'boolean', 'TEXT': 'string',
    'VARCHAR': 'string', 'CHAR': 'string', '': 'string', 'DATE': 'string', 'DATETIME': 'string'}
_FORMATS = {'DATE': 'date', 'DATETIME': 'date-time'}


def _field_schema(decltype):
    """JSON Schema for a GPKG column type; None (not exposed) for BLOB/geometry."""
    t = (decltype or '').upper().split('(')[0].strip()
    if t not in _JSON_TYPES:
        return None
    return {'type': _JSON_TYPES[t], **({'format': _FORMATS[t]} if t in _FORMATS else {})}


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


class Layer:
    """Schema of one feature table, read once per file version."""

    def __init__(self, con, table):
        row = con.execute(
            'SELECT g.column_name, g.geometry_type_name, s.organization,'
            ' s.organization_coordsys_id FROM gpkg_geometry_columns g'
            ' LEFT JOIN gpkg_spatial_ref_sys s ON s.srs_id = g.srs_id'
            ' WHERE g.table_name = ?', (table,)).fetchone()
        if row is None:
            raise ProviderConnectionError(f'no feature table {table!r} in GeoPackage')
        self.table, self.geom, self.geom_type = table, row[0], row[1].upper()
        if (str(row[2]).upper(), row[3]) not in _LONLAT_SRS:
            raise ProviderConnectionError(
                f'layer {table!r} is stored in {row[2]}:{row[3]}, not EPSG:4326')
        info = con.execute(f'PRAGMA table_info({quote_ident(table)})').fetchall()
        pks = [r[1] for r in info if r[5]]
        if len(pks) != 1:
            raise ProviderConnectionError(f'layer {table!r} has no integer fid')
        self.fid = pks[0]
        self.fields = {}  # name -> JSON Schema, in table order
        for _, name, decl, *_ in info:
            schema = None if name in (self.fid, self.geom) else _field_schema(decl)
            if schema is not None:
                self.fields[name] = schema
        self.booleans = {k for k, v in self.fields.items() if v['type'] == 'boolean'}
        self.texts = [k for k, v in self.fields.items() if v['type'] == 'string']
        rtree = f'rtree_{table}_{self.geom}'
        self.rtree = rtree if con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = ?", (rtree,)).fetchone() else None
        # Files we write have fid = row number (1..n, no gaps): then the n-th row is fid n and
        # a deep page is a primary-key range, as cheap as the first page. min and max each in
        # a statement of its own: SQLite reads one end of the key for a lone min() or max().
        t, fid = quote_ident(table), quote_ident(self.fid)
        lo = con.execute(f'SELECT min({fid}) FROM {t}').fetchone()[0]
        hi = con.execute(f'SELECT max({fid}) FROM {t}').fetchone()[0]
        n = _kept_count(con, table)
        if n is None:
            n = con.execute(f'SELECT count(*) FROM {t}').fetchone()[0]
        self.count = n
        self.dense = n == 0 or (lo == 1 and hi == n)


def _kept_count(con, table) -> int | None:
    """The row count GDAL keeps in gpkg_ogr_contents, when the triggers that keep it on every
    insert and delete (whoever writes) are in the file; else None. count(*) read every row of
    a 5M-point file, ~0.5 s for each worker's first request after a publish."""
    names = {f'trigger_insert_feature_count_{table}', f'trigger_delete_feature_count_{table}'}
    found = {r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)",
        tuple(names))}
    if found != names:
        return None
    try:
        row = con.execute('SELECT feature_count FROM gpkg_ogr_contents '
                          'WHERE lower(table_name) = lower(?)', (table,)).fetchone()
    except sqlite3.Error:   # no gpkg_ogr_contents table
        return None
    return row[0] if row and isinstance(row[0], int) and row[0] >= 0 else None


class _Lease:
    """GpkgFile.connection's context manager: a class rather than a @contextmanager generator,
    whose machinery cost a third of an item-by-id lookup's Python calls (issue 17)."""

    __slots__ = ('_file', '_con')

    def __init__(self, file):
        self._file, self._con = file, None

    def __enter__(self):
        self._con = self._file._take()
        return self._con

    def __exit__(self, *exc):
        self._file._give_back(self._con)
        return False


class GpkgFile:
    """One version of one .gpkg: pooled read-only connections, schema, counts."""

    def __init__(self, path, identity, count_budget_ms=DEFAULT_COUNT_BUDGET_MS):
        self.path, self.identity = path, identity
        self.count_budget_ms = count_budget_ms
        self.retired = False
        self._idle = []
        self._layers = {}
        self._counts = OrderedDict()
        self._lock = threading.Lock()

    def _open(self):
        uri = f'file:{quote(self.path)}?mode=ro&immutable=1'
        try:
            con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as err:
            raise ProviderConnectionError(f'cannot open {self.path}: {err}')
        # CQL2 LIKE is case-sensitive; q uses instr(lower()) and is not affected.
        con.execute('PRAGMA case_sensitive_like = ON')
        # No mmap: it saved ~5 % of a bbox page, but every page a worker ever read stayed in
        # its RSS (707 MiB per worker on the 5M-point bench file, against the < 250 MiB
        # target of issue 14), and a file cut short under a worker would kill it (SIGBUS).
        con.create_function('renkei_intersects', 5, _sql_intersects_box, deterministic=True)
        con.create_function('renkei_intersects_geom', 2, _sql_intersects_geom,
                            deterministic=True)
        return con

    def connection(self):
        """A connection of this file's pool for a ``with`` block (back to the pool after it).
        A pool rather than thread-locals: the dev server starts a thread per request,
        gunicorn reuses one; a pool keeps SQLite's page cache warm in both, and never shares
        one connection between two threads at once."""
        return _Lease(self)

    def _take(self):
        with self._lock:
            con = self._idle.pop() if self._idle else None
        return con or self._open()

    def _give_back(self, con):
        with self._lock:
            keep = not self.retired and len(self._idle) < _MAX_IDLE_CONNECTIONS
            if keep:
                self._idle.append(con)
        if not keep:
            con.close()

    def retire(self):
        with self._lock:
            self.retired = True
            idle, self._idle = self._idle, []
        for con in idle:
            con.close()

    def layer(self, table):
        lyr = self._layers.get(table)
        if lyr is None:
            try:
                with self.connection() as con:
                    lyr = Layer(con, table)
            except sqlite3.Error as err:
                raise ProviderConnectionError(f'{self.path}: {err}')
            self._layers[table] = lyr
        return lyr

    def count(self, con, sql, params, budgeted=True, page_ms=None):
        """COUNT(*) for one query on this file version, cached (the file never changes).

        ``budgeted``: give up after ``count_budget_ms`` and return None (then cached too, so a
        count known to be dear is not tried again on every page). Counts answered by an index
        (the R-tree) pass ``budgeted=False``: they cost less than the page they go with.
        ``page_ms``: what the page this count goes with took; the budget is then no longer
        than that (nor shorter than COUNT_FLOOR_MS), so the count never costs more than
        the page by more than the floor.
        """
        key = (sql, tuple(params))
        with self._lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        budget = page_bounded(self.count_budget_ms if budgeted else None, page_ms)
        if budget is not None and budget <= 0:
            n = None
        elif budget is None:
            n = con.execute(sql, params).fetchone()[0]
        else:
            deadline = time.perf_counter() + budget / 1000
            con.set_progress_handler(lambda: time.perf_counter() > deadline, _PROGRESS_STEPS)
            try:
                n = con.execute(sql, params).fetchone()[0]
            except sqlite3.OperationalError as err:
                if 'interrupt' not in str(err):
                    raise
                n = None
            finally:
                con.set_progress_handler(None, 0)
        with self._lock:
            self._counts[key] = n
            if len(self._counts) > _MAX_CACHED_COUNTS:
                self._counts.popitem(last=False)
        return n


class FileRegistry:
    """The GeoPackages one OGC API has open: one GpkgFile per path, the version on disk.

    It travels inside pygeoapi's provider definitions (which pygeoapi deep-copies for its
    templates and translations), so a copy is the registry itself.
    """

    def __init__(self, count_budget_ms=DEFAULT_COUNT_BUDGET_MS):
        # How long a count no index answers may take (ms); None: always exact; 0: never tried.
        self.count_budget_ms = count_budget_ms
        self._lock = threading.Lock()
        self._files = {}  # path -> GpkgFile (the version currently on disk)
        self._previous = set()  # paths published at the previous retain_only() call

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self):
        return f'<FileRegistry of {len(self._files)} files>'

    def file(self, path):
        try:
            st = os.stat(path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            identity = None
        with self._lock:
            current = self._files.get(path)
            if identity is None:
                # Unlinked after a newer version was published: connections we already hold
                # still read the old inode, so keep serving from them for requests that
                # started before the switch.
                if current is not None and current._idle:
                    return current
                raise ProviderConnectionError(f'GeoPackage not found: {path}')
            if current is not None and current.identity == identity:
                return current
            self._files[path] = fresh = GpkgFile(path, identity, self.count_budget_ms)
        if current is not None:
            current.retire()
        return fresh

    def retain_only(self, paths):
        """Close cached files that are no longer published.

        New versions are new files, and the publisher deletes old ones; an open connection
        would keep a deleted file's disk space for the life of the worker. Files of the
        previous call stay open for one more generation, so requests still running on the
        previous API work.
        """
        current = {os.path.abspath(p) for p in paths}
        with self._lock:
            keep = current | self._previous
            gone = [f for p, f in self._files.items() if p not in keep]
            for f in gone:
                del self._files[f.path]
            self._previous = current
        for f in gone:
            f.retire()


# For provider definitions that name no registry (pygeoapi's own YAML config): their files are
# fixed for the life of the process, so nothing prunes this one.
STANDALONE_FILES = FileRegistry()
