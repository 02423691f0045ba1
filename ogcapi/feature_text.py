"""GeoJSON Feature texts built column by column, byte for byte what the items view's
``json.dumps(..., ensure_ascii=False, separators=(',', ':'), default=json_serial)`` writes for
the same feature dicts.

Why: for a page of 1,000 features, building one dict per feature and letting json.dumps walk
them cost more than reading the rows (issue 17). Here each column is encoded with one C-level
``map`` over its values (str, int and finite float columns, the common case), and each Feature
is one ``%`` of a template made once per page. Anything unusual (NaN, bytes, mixed types) is
encoded value by value by the same JSON encoder, so the output never differs.

Coordinates are the bulk of a page's text, and float.__repr__ of a full-precision double costs
~0.7 us: 12,000 of them for a page of 1,000 small polygons. They are written by Arrow's cast to
string instead (the same shortest round-trip digits, ~10x faster) and assembled into geometry
texts by Arrow's string joins, all in C. Arrow and repr agree on the digits but not always on
the form ('1' for 1.0, '1e-7', '1.5e+15', '-0'): only values whose Arrow text is positional with
a decimal point within repr's own positional range keep it, the others take repr. A check on
first use compares both on tricky values and turns the Arrow path off if they ever disagree.
pyarrow (~80 MB of a worker's RSS, half of it its shared library's pages) is imported by the
first page with ARROW_MIN_FLOATS coordinates or more only; items and small pages are written
with repr, as fast at that size. Where Arrow wrote the geometries, page() writes the rest of
the page in Arrow too (ids, properties, the Feature template) and hands over one UTF-8 text
(FeatureBytes): no Python string per Feature, no join and encode of the whole page.
"""

import json
import math
import re
import threading

import numpy as np
import shapely

from pygeoapi.util import json_serial

# The encoder json.dumps(ensure_ascii=False, separators=(',', ':'), default=json_serial) uses.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'), default=json_serial)
_STR = json.encoder.encode_basestring   # the C function ENCODER applies to str
_NONE = type(None)
# Coordinates in a page from which the Arrow path pays for itself (and for pyarrow's import).
ARROW_MIN_FLOATS = 1000
_ARROW = None   # (pyarrow, pyarrow.compute) once imported and checked; False: repr only
_ARROW_LOCK = threading.Lock()


def _plain_numbers(values) -> bool:
    """No NaN or infinity among the numbers (json writes NaN/Infinity, repr nan/inf: those
    take ENCODER). A finite sum proves it in one C loop; an overflowing one only sends the
    column to the slow path. filter(None) drops None (and zeros, which are finite)."""
    try:
        return math.isfinite(sum(filter(None, values)))
    except OverflowError:   # an int too large for a float among floats
        return False


def column(values, boolean=False) -> list[str]:
    """The JSON text of each value of one column."""
    if boolean:
        # Stored as 0/1 (GeoPackage has no boolean storage class); served as true/false.
        return ['null' if v is None else ('true' if v else 'false') for v in values]
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    if kinds <= {str}:
        enc = _STR
    elif kinds <= {int} or (kinds <= {int, float} and _plain_numbers(values)):
        enc = repr   # int.__repr__ / float.__repr__, as json's encoder
    else:
        enc = ENCODER.encode
    if len(kinds) == len(set(map(type, values))):   # no None among them
        return list(map(enc, values))
    return ['null' if v is None else enc(v) for v in values]


def template(names) -> str:
    """%-template of one Feature: id, geometry, then the properties in ``names`` order."""
    props = ','.join(f'{_STR(n)}:%s' for n in (n.replace('%', '%%') for n in names))
    return '{"type":"Feature","id":%s,"geometry":%s,"properties":{' + props + '}}'


def features(fids, geometries, columns, names) -> list[str]:
    """Feature texts: ``fids`` and ``geometries`` as JSON texts, ``columns`` one list of JSON
    texts per name."""
    return list(map(template(names).__mod__, zip(fids, geometries, *columns)))


class FeatureBytes:
    """The Features of a page as one UTF-8 text, separated by commas: the items view puts it
    between the brackets of "features" as it is. ``body`` is a bytes-like view of Arrow's
    buffer (copied once, into the response)."""

    __slots__ = ('body', 'count')

    def __init__(self, body, count):
        self.body, self.count = body, count

    def __len__(self):
        return self.count


def page(fids, geoms, columns, names, booleans=()):
    """The Features of a page: ``fids`` and each of ``columns`` (one per name) as values,
    ``geoms`` as texts. When Arrow wrote the geometries (an Arrow array: a page worth it),
    every other part is written by Arrow too and the page comes back as FeatureBytes, with no
    Python string per Feature; else as features() writes it, a list of texts."""
    if isinstance(geoms, list):
        values = [column(c, n in booleans) for c, n in zip(columns, names)]
        return features(column(fids), geoms, values, names)
    pc = _ARROW[1]
    parts = ['{"type":"Feature","id":', _arrow_column(fids), ',"geometry":', geoms,
             ',"properties":{']
    for i, (name, values) in enumerate(zip(names, columns)):
        parts += [(',' if i else '') + _STR(name) + ':', _arrow_column(values, name in booleans)]
    parts.append('}},')   # the last comma is cut off below
    merged = []
    for p in parts:   # adjacent literals as one
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    texts = pc.binary_join_element_wise(*merged, '')
    if texts.null_count:   # a part left null would drop its Feature's text: never expected
        return page(fids, _as_list(geoms), columns, names, booleans)
    if not len(texts):
        return FeatureBytes(b'', 0)
    _, offsets, data = texts.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32)[[texts.offset, texts.offset + len(texts)]]
    return FeatureBytes(memoryview(data)[int(ends[0]):int(ends[1]) - 1], len(texts))


# Python's JSON string encoder (encode_basestring) escapes these and nothing else. Searched for
# in Python over the column's text joined: an Arrow regex is compiled anew on every call.
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _arrow_column(values, boolean=False):
    """What column() writes for ``values``, as an Arrow string array: str, int and finite
    float columns (and 0/1 booleans) by Arrow, anything else by column()."""
    pa, pc = _ARROW
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    try:
        if boolean:
            if kinds <= {int}:
                flags = pc.not_equal(pa.array(values, pa.int64()), 0)
                return pc.fill_null(pc.if_else(flags, 'true', 'false'), 'null')
        elif kinds <= {str}:
            if not _NEEDS_ESCAPE.search(''.join(filter(None, values))):
                texts = pa.array(values, pa.string())
                return pc.fill_null(pc.binary_join_element_wise('"', texts, '"', ''), 'null')
        elif kinds <= {int}:
            return pc.fill_null(pc.cast(pa.array(values, pa.int64()), pa.string()), 'null')
        elif kinds <= {float} and None not in values and _plain_numbers(values):
            return float_texts(np.array(values, dtype=np.float64))
    except (pa.ArrowInvalid, OverflowError):
        pass
    return pa.array(column(values, boolean), pa.string())


def points(xs, ys) -> list[str] | None:
    """Point geometry texts for coordinates (lists or float arrays); None when one is not
    finite (the caller then encodes the geometry dicts as before)."""
    return _as_list(point_texts(xs, ys))


def point_texts(xs, ys):
    """What points() writes, as an Arrow string array when Arrow wrote it (page() then
    assembles the Features without leaving Arrow), else a list."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return None
    arrow = arrow_for(2 * len(xs))
    if not arrow:
        return list(map('{"type":"Point","coordinates":[%r,%r]}'.__mod__,
                        zip(xs.tolist(), ys.tolist())))
    return arrow[1].binary_join_element_wise(
        '{"type":"Point","coordinates":[', float_texts(xs), ',', float_texts(ys), ']}', '')


def _as_list(texts):
    return texts if texts is None or isinstance(texts, list) else texts.to_pylist()


def arrow_for(n_floats):
    """(pyarrow, pyarrow.compute) when ``n_floats`` coordinates are worth the Arrow path and
    Arrow writes them as repr does, else None."""
    global _ARROW
    if n_floats < ARROW_MIN_FLOATS:
        return None
    if _ARROW is None:
        with _ARROW_LOCK:
            if _ARROW is None:
                import pyarrow
                import pyarrow.compute
                arrow = (pyarrow, pyarrow.compute)
                _ARROW = arrow if _arrow_agrees(arrow) else False
    return _ARROW or None


def float_texts(values: np.ndarray, arrow=None):
    """The JSON text of each finite double (float.__repr__) as an Arrow string array; only
    where arrow_for() has answered (or with ``arrow``, the modules being checked)."""
    pa, pc = arrow or _ARROW
    values = np.ascontiguousarray(values, dtype=np.float64)
    texts = pc.cast(pa.array(values, type=pa.float64()), pa.string())
    mag = np.abs(values)
    # repr is positional from 1e-4 up to 1e16; within that, Arrow's text must have a '.' and
    # no exponent. Integral values (no '.' from Arrow) are told from the values; exponents
    # (Arrow writes some 17-digit values so) by one look at all the text first: a search
    # per value costs ~30 ns, and coordinates hardly ever have one.
    odd = (mag < 1e-4) | (mag >= 1e16) | (values == np.trunc(values))
    data = texts.buffers()[2]
    if data is not None and (np.frombuffer(data, dtype=np.uint8) == ord('e')).any():
        odd |= pc.match_substring(texts, 'e').to_numpy(zero_copy_only=False)
    if odd.any():
        idx = odd.nonzero()[0]
        texts = pc.replace_with_mask(texts, pa.array(odd), pa.array(
            [float.__repr__(v) for v in values[idx].tolist()], type=pa.string()))
    return texts


def _arrow_agrees(arrow) -> bool:
    """Arrow writes the digits repr writes, on values where shortest-digit algorithms are known
    to trip (ties, powers of two and ten, subnormals, 17-digit values, both signs)."""
    rng = np.random.default_rng(17)
    sample = np.concatenate([
        rng.uniform(-180, 180, 200), rng.uniform(-1e7, 1e7, 100),
        rng.integers(0, 2 ** 63, 300, dtype=np.uint64).view(np.float64),
        [0.1 + 0.2, 1 / 3, 2 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
         9007199254740993.0, 1e16, 1e15, 123456789012345.6, 1e-4, 9.999999999999999e-05,
         0.0001, 1.0, 0.0, -0.0, 100.0, 134.9, 34.65, 0.5, 5e-5, 2.0 ** -20, 2.0 ** 60,
         0.00012345, 0.00099999, 1234567890123456.5, 4503599627370495.5, 999999999999999.9]])
    sample = np.concatenate([sample, -sample])
    sample = sample[np.isfinite(sample)]
    try:
        return float_texts(sample, arrow).to_pylist() == list(map(float.__repr__,
                                                                  sample.tolist()))
    except Exception:   # noqa: BLE001 - any failure of the check means: use repr
        return False


def geometries(dicts) -> list[str]:
    """Texts of GeoJSON geometry dicts (None: null)."""
    return list(map(ENCODER.encode, dicts))


_POLYGON, _MULTIPOLYGON = 3, 6


def _rings(coords, ring_offsets) -> list[str]:
    xy = coords.tolist()
    pts = list(map('[%r,%r]'.__mod__, map(tuple, xy)))
    bounds = ring_offsets.tolist()
    return ['[' + ','.join(pts[a:b]) + ']' for a, b in zip(bounds, bounds[1:])]


def _nest(parts, offsets) -> list[str]:
    bounds = offsets.tolist()
    return ['[' + ','.join(parts[a:b]) + ']' for a, b in zip(bounds, bounds[1:])]


def _python_shapes(kind, coords, offsets) -> list[str]:
    """What _arrow_shapes writes, with repr and str.join (few coordinates, empty rings, or
    Arrow off)."""
    if kind == 0:
        return list(map('{"type":"Point","coordinates":[%r,%r]}'.__mod__,
                        map(tuple, coords.tolist())))
    if kind == _POLYGON:
        return ['{"type":"Polygon","coordinates":' + t + '}'
                for t in _nest(_rings(coords, offsets[0]), offsets[1])]
    return ['{"type":"MultiPolygon","coordinates":' + t + '}' for t in
            _nest(_nest(_rings(coords, offsets[0]), offsets[1]), offsets[2])]


def _joined(parts, offsets, sep, head, tail):
    """head + sep.join(parts[a:b]) + tail for each pair of consecutive offsets."""
    pa, pc = _ARROW
    lists = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), parts)
    return pc.binary_join_element_wise(head, pc.binary_join(lists, sep), tail, '')


_HEADS = {_POLYGON: '{"type":"Polygon","coordinates":[',
          _MULTIPOLYGON: '{"type":"MultiPolygon","coordinates":['}


def _arrow_shapes(kind, coords, offsets):
    """Texts of one kind of geometry from shapely's ragged arrays, joined by Arrow (an Arrow
    string array); None when
    Arrow is not worth it or off, or a ring or part is empty (an empty join would read as one
    empty element)."""
    arrow = arrow_for(coords.size)
    if not arrow or any((np.diff(o) <= 0).any() for o in offsets):
        return None
    xy = arrow[1].binary_join_element_wise(float_texts(coords[:, 0]), float_texts(coords[:, 1]),
                                           ',')
    if kind == 0:
        return arrow[1].binary_join_element_wise('{"type":"Point","coordinates":[', xy, ']}',
                                                 '')
    # Points of a ring: [[x,y],[x,y]]; rings of a polygon: [ring,ring].
    parts = _joined(xy, offsets[0], '],[', '[[', ']]')
    if kind == _MULTIPOLYGON:
        parts = _joined(parts, offsets[1], ',', '[', ']')
    return _joined(parts, offsets[-1], ',', _HEADS[kind], ']}')


def polygon_texts(coords, offsets):
    """Texts of 2D polygons given as shapely.to_ragged_array's coordinates and offsets (what
    shapes() writes for them), or None when a coordinate is not finite."""
    if not np.isfinite(coords).all():
        return None
    texts = _arrow_shapes(_POLYGON, coords, offsets)
    return texts if texts is not None else _python_shapes(_POLYGON, coords, offsets)


def shapes(geoms) -> list[str]:
    """Geometry texts of an array of shapely geometries: what ENCODER writes for their
    __geo_interface__ (null for None or empty). 2D points, polygons and multipolygons are
    written from their coordinate arrays in one pass each (shapely's __geo_interface__ costs
    ~25 us per polygon); other kinds, Z and non-finite coordinates go through the encoder."""
    return _as_list(shape_texts(geoms))


def shape_texts(geoms):
    """What shapes() writes, as the Arrow string array Arrow wrote when one kind written by
    Arrow is the whole page (page() then stays in Arrow), else a list."""
    out = ['null'] * len(geoms)
    kind = shapely.get_type_id(geoms)
    plain = ~shapely.is_empty(geoms) & ~shapely.has_z(geoms) & (kind >= 0)
    done = np.zeros(len(geoms), dtype=bool)
    for k in (0, _POLYGON, _MULTIPOLYGON):
        idx = (plain & (kind == k)).nonzero()[0]
        if not len(idx):
            continue
        _, coords, offsets = shapely.to_ragged_array(geoms[idx])
        if not np.isfinite(coords).all():
            continue
        texts = _arrow_shapes(k, coords, offsets)
        if texts is not None and len(idx) == len(geoms):
            return texts
        if texts is None:
            texts = _python_shapes(k, coords, offsets)
        for i, t in zip(idx.tolist(), _as_list(texts)):
            out[i] = t
        done[idx] = True
    for i in (~done & (kind >= 0) & ~shapely.is_empty(geoms)).nonzero()[0].tolist():
        out[i] = ENCODER.encode(geoms[i].__geo_interface__)
    return out
