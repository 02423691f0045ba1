"""OGC API – Tiles for every collection: Mapbox Vector Tiles in WebMercatorQuad, the tileset
metadata, the tilesets list and a TileJSON.

A tile comes from the version's pre-generated pyramid (store.tiles, MBTiles beside the
GeoPackage) when it has one and the zoom is within it; otherwise it is cut per request from the
GeoPackage R-tree (small layers, and zooms deeper than the pyramid, where a tile covers a few
streets). A version stored in PostGIS (PostgreSQL mode) takes the same two paths in the
database: its pyramid table, else ST_AsMVT (store.tiles_pg). Tiles of one collection version
never change, so the ETag is the version and a client's If-None-Match is answered 304; encoded
and gzipped tiles are kept in a small LRU.

Which collections exist comes from the API of the current catalogue version for the caller's
access labels (ogcapi.api.OGCAPI), the same list every other read path uses: a tile of a dataset
the caller may not read answers 404.

Framework-free: functions return (status, headers, body); ogcapi.blueprint answers them.
"""
from __future__ import annotations

import gzip
import json
import os
import threading
from collections import OrderedDict
from http import HTTPStatus
from pathlib import Path

import numpy as np
import shapely

from ogcapi.gpkg_read import quote_ident, wkb
from ogcapi.postgis import TABLES_KEY
from store import tiles as store_tiles
from store import tiles_pg
from store.features_pg import is_postgis, table_of

MVT = 'application/vnd.mapbox-vector-tile'
TMS_ID = 'WebMercatorQuad'
TMS_URI = 'http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad'
TMS_DEFINITION = ('https://raw.githubusercontent.com/opengeospatial/2D-Tile-Matrix-Set/master/'
                  'registry/json/WebMercatorQuad.json')
CRS_3857 = 'http://www.opengis.net/def/crs/EPSG/0/3857'
REL_TILESETS = 'http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector'
CACHE_CONTROL = 'public, max-age=300'
_CACHE_ENTRIES = 2048
_GZIP_LEVEL = 5
# Features per on-the-fly tile: small layers only, but a tile must stay bounded anyway.
_MAX_FEATURES = 50_000
_JSON = 'application/json; charset=utf-8'


class _LRU:
    def __init__(self, size):
        self.size, self._d, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value):
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_TILES = _LRU(_CACHE_ENTRIES)       # (path, inode, z, x, y, gzip?) -> bytes
_ARCHIVES = {}                      # path of the .mbtiles -> (identity, TileArchive)
_ARCHIVES_LOCK = threading.Lock()


def tiled_collection(api, cid):
    """(resource, provider definition) of a published collection, or None: the one place the
    tile paths ask which collections exist."""
    res = api.config['resources'].get(cid)
    if res is None or res.get('type') != 'collection':
        return None
    return res, res['providers'][0]


def _archive(gpkg_path):
    path = str(store_tiles.tiles_path(gpkg_path))
    try:
        st = os.stat(path)
    except OSError:
        return None
    identity = (st.st_ino, st.st_mtime_ns)
    with _ARCHIVES_LOCK:
        found = _ARCHIVES.get(path)
        if found and found[0] == identity:
            return found[1]
    archive = store_tiles.TileArchive(path)
    with _ARCHIVES_LOCK:
        _ARCHIVES[path] = (identity, archive)
        if len(_ARCHIVES) > 256:
            _ARCHIVES.pop(next(iter(_ARCHIVES)))
    return archive


def etag(provider_def):
    """The collection version: files and tables are written once per version (store.versions,
    store.features_pg), and their names end in it."""
    if is_postgis(provider_def['data']):
        return f'"{table_of(provider_def["data"])}"'
    path = Path(provider_def['data'])
    return f'"{path.parent.name}-{path.stem}"'


def _limits(bbox, maxzoom):
    """tileMatrixSetLimits of the collection's extent, zoom 0..maxzoom."""
    import math
    minx, miny, maxx, maxy = bbox
    miny, maxy = max(miny, -85.0511), min(maxy, 85.0511)
    out = []
    for z in range(0, maxzoom + 1):
        n = 1 << z

        def col(lon):
            return min(n - 1, max(0, int((lon + 180) / 360 * n)))

        def row(lat):
            r = math.radians(lat)
            return min(n - 1, max(0, int((1 - math.asinh(math.tan(r)) / math.pi) / 2 * n)))
        out.append({'tileMatrix': str(z), 'minTileRow': row(maxy), 'maxTileRow': row(miny),
                    'minTileCol': col(minx), 'maxTileCol': col(maxx)})
    return out


def _bbox(res):
    return res['extents']['spatial']['bbox']


def _in_limits(res, z, y, x):
    if not (0 <= z <= store_tiles.MAXZOOM and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
        return False
    lim = _limits(_bbox(res), z)[z]
    return (lim['minTileRow'] <= y <= lim['maxTileRow']
            and lim['minTileCol'] <= x <= lim['maxTileCol'])


def _tile_template(base, cid):
    return f'{base}/collections/{cid}/tiles/{TMS_ID}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}?f=mvt'


def _fields(api, cid, provider_def):
    from pygeoapi.plugin import load_plugin
    try:
        return load_plugin('provider', provider_def).fields
    except Exception:  # noqa: BLE001 - a broken file: metadata without its fields
        return {}


def tileset(api, base, cid):
    """/collections/{id}/tiles/WebMercatorQuad: OGC TileSet metadata."""
    found = tiled_collection(api, cid)
    if found is None:
        return _not_found()
    res, pdef = found
    fields = _fields(api, cid, pdef)
    url = f'{base}/collections/{cid}/tiles/{TMS_ID}'
    doc = {
        'title': res['title'], 'dataType': 'vector', 'crs': CRS_3857,
        'tileMatrixSetURI': TMS_URI,
        'tileMatrixSetLimits': _limits(_bbox(res), store_tiles.MAXZOOM),
        'layers': [{'id': cid, 'title': res['title'], 'dataType': 'vector',
                    'minTileMatrix': '0', 'maxTileMatrix': str(store_tiles.MAXZOOM),
                    'boundingBox': {'lowerLeft': _bbox(res)[:2], 'upperRight': _bbox(res)[2:],
                                    'crs': 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'},
                    'propertiesSchema': {'type': 'object', 'properties': {
                        k: {kk: v[kk] for kk in ('type', 'title') if kk in v}
                        for k, v in fields.items()}}}],
        'links': [
            {'rel': 'self', 'type': 'application/json', 'href': url},
            {'rel': 'alternate', 'type': 'application/vnd.mapbox.tile+json',
             'title': 'TileJSON', 'href': f'{url}?f=tilejson'},
            {'rel': 'http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme',
             'type': 'application/json', 'href': TMS_DEFINITION},
            {'rel': 'item', 'type': MVT, 'templated': True, 'href': _tile_template(base, cid)},
            {'rel': 'collection', 'type': 'application/json',
             'href': f'{base}/collections/{cid}'},
        ],
    }
    return _json(doc)


def tilejson(api, base, cid):
    found = tiled_collection(api, cid)
    if found is None:
        return _not_found()
    res, pdef = found
    fields = _fields(api, cid, pdef)
    kinds = {'integer': 'Number', 'number': 'Number', 'boolean': 'Boolean'}
    doc = {'tilejson': '3.0.0', 'name': res['title'], 'scheme': 'xyz',
           'tiles': [f'{base}/collections/{cid}/tiles/{TMS_ID}/{{z}}/{{y}}/{{x}}?f=mvt'],
           'minzoom': 0, 'maxzoom': store_tiles.MAXZOOM, 'bounds': _bbox(res),
           'vector_layers': [{'id': cid, 'minzoom': 0, 'maxzoom': store_tiles.MAXZOOM,
                              'fields': {k: kinds.get(v.get('type'), 'String')
                                         for k, v in fields.items()}}]}
    return _json(doc, 'application/json; charset=utf-8')


def tilesets(api, base, cid):
    """/collections/{id}/tiles: the one tileset every collection has."""
    found = tiled_collection(api, cid)
    if found is None:
        return _not_found()
    res, _ = found
    url = f'{base}/collections/{cid}/tiles/{TMS_ID}'
    doc = {'tilesets': [{
        'title': res['title'], 'dataType': 'vector', 'crs': CRS_3857,
        'tileMatrixSetURI': TMS_URI,
        'links': [{'rel': 'self', 'type': 'application/json', 'href': url},
                  {'rel': 'item', 'type': MVT, 'templated': True,
                   'href': _tile_template(base, cid)}]}],
        'links': [{'rel': 'self', 'type': 'application/json',
                   'href': f'{base}/collections/{cid}/tiles'}]}
    return _json(doc)


def tile(api, cid, z, y, x, *, if_none_match=None, accept_gzip=False):
    """One MVT tile: 200 with the tile, 204 where the collection has nothing, 304 when the
    client has this version, 404 for an unknown collection or a tile outside its limits."""
    found = tiled_collection(api, cid)
    if found is None:
        return _not_found()
    res, pdef = found
    if not _in_limits(res, z, y, x):
        return _not_found('tile outside the limits of this tileset')
    tag = etag(pdef)
    headers = {'ETag': tag, 'Cache-Control': CACHE_CONTROL, 'Vary': 'Accept-Encoding'}
    if if_none_match and (tag in [t.strip() for t in if_none_match.split(',')]
                          or if_none_match.strip() == '*'):
        return HTTPStatus.NOT_MODIFIED, headers, b''
    key = (_origin(pdef), pdef['data'], tag, z, x, y, accept_gzip)
    body = _TILES.get(key)
    if body is None:
        data, gzipped = render(api, pdef, cid, z, x, y)
        if not data:
            body = b''
        elif accept_gzip:
            body = data if gzipped else gzip.compress(data, _GZIP_LEVEL, mtime=0)
        else:
            body = gzip.decompress(data) if gzipped else data
        _TILES.put(key, body)
    if not body:
        return HTTPStatus.NO_CONTENT, headers, b''
    headers['Content-Type'] = MVT
    if accept_gzip:
        headers['Content-Encoding'] = 'gzip'
    return HTTPStatus.OK, headers, body


def _origin(pdef):
    """Which database a PostGIS version lives in: one process may serve several (two data
    dirs, two schemas) holding tables of the same name."""
    tables = pdef.get(TABLES_KEY)
    return None if tables is None else tables.engine.url.render_as_string(hide_password=True)


def render(api, pdef, cid, z, x, y) -> tuple[bytes, bool]:
    """(tile, gzipped?), b'' when empty: the pyramid's stored (gzipped) tile, else one cut
    from the GeoPackage or the PostGIS table (raw)."""
    if is_postgis(pdef['data']):
        return tiles_pg.render(pdef[TABLES_KEY].engine, pdef['data'], cid, z, x, y)
    archive = _archive(pdef['data'])
    if archive is not None and archive.minzoom <= z <= archive.maxzoom:
        data = archive.get(z, x, y) or b''
        return data, data[:2] == b'\x1f\x8b'
    return cut_tile(pdef, cid, z, x, y), False


def cut_tile(pdef, cid, z, x, y) -> bytes:
    """A tile from the GeoPackage R-tree: candidates by envelope, exact work in store.tiles."""
    from ogcapi.provider import FILES_KEY
    from ogcapi.gpkg_read import STANDALONE_FILES
    registry = pdef.get(FILES_KEY) or STANDALONE_FILES
    f = registry.file(pdef['data'])
    layer = f.layer(pdef.get('layer') or 'features')
    minx, miny, maxx, maxy = store_tiles.tile_bounds_lonlat(z, x, y)
    pad = (maxx - minx) * store_tiles.BUFFER / store_tiles.EXTENT
    names = list(layer.fields)
    cols = ', '.join(f't.{quote_ident(n)}' for n in names)
    t, fid, geom = quote_ident(layer.table), quote_ident(layer.fid), quote_ident(layer.geom)
    if layer.rtree:
        sql = (f'SELECT t.{fid}, t.{geom}{", " + cols if cols else ""} FROM {t} t'
               f' JOIN {quote_ident(layer.rtree)} r ON r.id = t.{fid}'
               ' WHERE r.maxx >= ? AND r.minx <= ? AND r.maxy >= ? AND r.miny <= ?'
               f' LIMIT {_MAX_FEATURES}')
        params = (minx - pad, maxx + pad, miny - pad, maxy + pad)
    else:
        sql = (f'SELECT t.{fid}, t.{geom}{", " + cols if cols else ""} FROM {t} t'
               f' LIMIT {_MAX_FEATURES}')
        params = ()
    with f.connection() as con:
        rows = con.execute(sql, params).fetchall()
    if not rows:
        return b''
    geoms = shapely.from_wkb([wkb(r[1]) for r in rows])
    keep = ~shapely.is_missing(geoms)
    booleans = layer.booleans
    props = [{n: (bool(v) if n in booleans and v is not None else v)
              for n, v in zip(names, r[2:])} for r in rows]
    ids = [r[0] for r in rows]
    idx = np.nonzero(keep)[0]
    return store_tiles.encode_tile(cid, geoms[idx], [props[i] for i in idx],
                                   [ids[i] for i in idx], z, x, y)


def openapi_paths(collections: dict) -> dict:
    """The OpenAPI paths of these routes for each collection (id → title), written beside the
    routes they describe so that the document and the answers cannot drift apart. Per
    collection, as pygeoapi lists items, so the OGC API document stays one style."""
    error = {'description': 'Unknown collection, or a tile outside the tileset limits',
             'content': {'application/json': {'schema': {
                 'type': 'object', 'required': ['code', 'description'],
                 'properties': {'code': {'type': 'string'},
                                'description': {'type': 'string'}}}}}}
    bad_f = {'description': 'A format this route does not offer',
             'content': {'application/json': {'schema': {'type': 'object'}}}}

    def f(*values):
        return {'name': 'f', 'in': 'query', 'required': False,
                'schema': {'type': 'string', 'enum': list(values)},
                'description': 'Response format'}

    def index(name, low, high, what):
        return {'name': name, 'in': 'path', 'required': True, 'description': what,
                'schema': {'type': 'integer', 'minimum': low, 'maximum': high}}

    json_doc = {'content': {'application/json': {'schema': {'type': 'object'}}}}
    paths = {}
    for cid, title in collections.items():
        base = f'/collections/{cid}/tiles'
        tags = [cid]
        paths[base] = {'get': {
            'summary': f'Tilesets of {title}', 'tags': tags, 'operationId': f'getTileSets{cid}',
            'parameters': [f('json')],
            'responses': {'200': {'description': 'The vector tilesets list', **json_doc},
                          '400': bad_f, '404': error}}}
        paths[f'{base}/{TMS_ID}'] = {'get': {
            'summary': f'{TMS_ID} tileset of {title}', 'tags': tags,
            'operationId': f'getTileSet{cid}', 'parameters': [f('json', 'tilejson')],
            'description': 'OGC TileSet metadata; f=tilejson gives TileJSON 3.0.0.',
            'responses': {'200': {'description': 'The tileset metadata', **json_doc},
                          '400': bad_f, '404': error}}}
        top = store_tiles.MAXZOOM
        paths[f'{base}/{TMS_ID}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}'] = {'get': {
            'summary': f'A vector tile of {title}', 'tags': tags,
            'operationId': f'getTile{cid}',
            'description': ('Mapbox Vector Tile (one layer named after the collection). '
                            'The ETag is the collection version: send it as If-None-Match '
                            'for a 304. gzip when the client accepts it.'),
            'parameters': [index('tileMatrix', 0, top, 'Zoom level'),
                           index('tileRow', 0, 2 ** top - 1, 'Row (y), from the north'),
                           index('tileCol', 0, 2 ** top - 1, 'Column (x), from the west'),
                           f('mvt')],
            'responses': {
                '200': {'description': 'The tile',
                        'content': {MVT: {'schema': {'type': 'string', 'format': 'binary'}}}},
                '204': {'description': 'The collection has nothing in this tile'},
                '304': {'description': 'The client has this version of the tile'},
                '400': bad_f, '404': error}}}
    return paths


def _json(doc, ctype=_JSON):
    return HTTPStatus.OK, {'Content-Type': ctype}, json.dumps(doc, ensure_ascii=False)


def _not_found(message='Collection not found'):
    return (HTTPStatus.NOT_FOUND, {'Content-Type': _JSON},
            json.dumps({'code': 'NotFound', 'description': message}))
