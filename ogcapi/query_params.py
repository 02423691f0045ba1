"""The plain query parameters of an items request, read the same way whichever store holds the
features (GeoPackage or PostGIS): `q` terms, and `property=value` typed by the collection's
schema."""
import math
import unicodedata

from ogcapi.errors import QueryError
from ogcapi.gpkg_read import SQLITE_INT_RANGE as _INT64


def q_terms(q: str) -> list[str]:
    """Japanese has no word boundaries: `q` is a substring match over text columns, its
    comma-separated terms OR'ed as in OGC API Records; NFKC and lower case, so that ＡＥＤ
    finds AED."""
    return [t for t in (unicodedata.normalize('NFKC', s).strip().lower()
                        for s in q.split(',')) if t]


def typed(fields: dict, name: str, value):
    """`value` of the property `name` as its schema types it; a 400 for an unknown property
    or a value of the wrong kind."""
    schema = fields.get(name)
    if schema is None:
        raise QueryError(f'unknown query parameter: {name}')
    kind = schema['type']
    try:
        if kind == 'integer':
            n = int(value)
            # Beyond 64 bits it cannot be stored, so it matches nothing, as a float does.
            return n if _INT64[0] <= n <= _INT64[1] else float(value)
        if kind == 'number':
            return float(value)
    except ValueError:
        raise QueryError(f'{name}: expected {kind}, got {value!r}')
    if kind == 'boolean':
        v = {'true': True, '1': True, 'false': False, '0': False}.get(str(value).lower())
        if v is None:
            raise QueryError(f'{name}: expected true or false')
        return v
    return value


def box(bbox) -> tuple[float, float, float, float]:
    """A `bbox` (4 numbers, or 6 with heights, which are dropped) as (minx, miny, maxx, maxy);
    a 400 for NaN, infinity or a box across the antimeridian."""
    if len(bbox) == 6:
        bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
    minx, miny, maxx, maxy = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise QueryError('bbox values must be finite numbers (no NaN or infinity)')
    if minx > maxx:
        raise QueryError('bbox crossing the antimeridian is not supported')
    return float(minx), float(miny), float(maxx), float(maxy)
