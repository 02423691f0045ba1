"""GeoJSON Feature texts built column by column, byte for byte what the items view's
``json.dumps(..., ensure_ascii=False, separators=(',', ':'), default=json_serial)`` writes for
the same feature dicts.

Why: for a page of 1,000 features, building one dict per feature and letting json.dumps walk
them cost more than reading the rows (issue 17). Here each column is encoded with one C-level
``map`` over its values (str, int and finite float columns, the common case), and each Feature
is one ``%`` of a template made once per page. Anything unusual (NaN, bytes, mixed types) is
encoded value by value by the same JSON encoder, so the output never differs.
"""

import json
import math

import numpy as np
import shapely

from pygeoapi.util import json_serial

# The encoder json.dumps(ensure_ascii=False, separators=(',', ':'), default=json_serial) uses.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'), default=json_serial)
_STR = json.encoder.encode_basestring   # the C function ENCODER applies to str
_NONE = type(None)


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


def points(xs, ys) -> list[str] | None:
    """Point geometry texts for coordinate lists; None when a coordinate is not finite (the
    caller then encodes the geometry dicts as before)."""
    if not (_plain_numbers(xs) and _plain_numbers(ys)):
        return None
    return list(map('{"type":"Point","coordinates":[%r,%r]}'.__mod__, zip(xs, ys)))


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


def shapes(geoms) -> list[str]:
    """Geometry texts of an array of shapely geometries: what ENCODER writes for their
    __geo_interface__ (null for None or empty). 2D points, polygons and multipolygons are
    written from their coordinate arrays in one pass each (shapely's __geo_interface__ costs
    ~25 us per polygon); other kinds, Z and non-finite coordinates go through the encoder."""
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
        if k == 0:
            texts = list(map('{"type":"Point","coordinates":[%r,%r]}'.__mod__,
                             map(tuple, coords.tolist())))
        elif k == _POLYGON:
            texts = ['{"type":"Polygon","coordinates":' + t + '}'
                     for t in _nest(_rings(coords, offsets[0]), offsets[1])]
        else:
            texts = ['{"type":"MultiPolygon","coordinates":' + t + '}' for t in
                     _nest(_nest(_rings(coords, offsets[0]), offsets[1]), offsets[2])]
        for i, t in zip(idx.tolist(), texts):
            out[i] = t
        done[idx] = True
    for i in (~done & (kind >= 0) & ~shapely.is_empty(geoms)).nonzero()[0].tolist():
        out[i] = ENCODER.encode(geoms[i].__geo_interface__)
    return out
