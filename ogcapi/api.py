"""The OGC API (pygeoapi) over renkei's published collections, without Flask.

pygeoapi's own Flask app reads one YAML config at import time and never
reloads it. Here the config is generated in code from the catalogue's list of
collections, and rebuilt whenever the catalogue's version token changes: a
harvest in another process publishes, bumps the token, and every web worker
picks the new collections up on its next request, with no restart.

Each OGCAPI owns the registry of the GeoPackages it has open (gpkg_read.FileRegistry), handed
to its providers inside their definitions: two APIs in one process never close each other's
files.

Errors: what the client sent wrong is an ogcapi.errors.QueryError and answers 400 with its
message; anything else is a server fault, answered 500 with a fixed text and logged here with
its traceback.

Only the framework-free core functions of pygeoapi are used; the web adapter
lives in ogcapi/blueprint.py.
"""

import copy
import datetime
import itertools
import json
import logging
import math
import os
import re
import threading
from http import HTTPStatus
from typing import Callable
from urllib.parse import quote

from pygeoapi import l10n
from pygeoapi.api import (API, F_HTML, F_JSON, F_JSONLD, FORMAT_TYPES, SYSTEM_LOCALE,
                          evaluate_limit, landing_page as _landing_page, validate_bbox)
from pygeoapi.api.itemtypes import (get_collection_item, get_collection_items,
                                    get_collection_queryables)
from pygeoapi.openapi import get_oas
from pygeoapi.plugin import load_plugin
from pygeoapi.provider.base import ProviderGenericError
from pygeoapi.util import (CrsTransformSpec, json_serial, render_j2_template, str2bool,
                           to_json)

from ogcapi import cql
from ogcapi.feature_text import FeatureBytes
from ogcapi.errors import QueryError
from ogcapi.gpkg_read import DEFAULT_COUNT_BUDGET_MS, FileRegistry, transform_bbox
from ogcapi.postgis import TABLES_KEY, PostGISProvider, RawFeatures, TableRegistry
from ogcapi.provider import FILES_KEY, GPKGProvider
from ogcapi.tiles import REL_TILESETS, openapi_paths
from store.features_pg import is_postgis, table_of

LOGGER = logging.getLogger(__name__)

PROVIDER = 'ogcapi.provider.GPKGProvider'
POSTGIS_PROVIDER = 'ogcapi.postgis.PostGISProvider'
CRS84 = 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'
# Output CRSs offered on top of CRS84 (Features Part 2): JGD2011 (6668) and
# its plane rectangular zone V (6673, the zone Hyogo lies in) are what
# Japanese GIS users ask for. Axis order follows the EPSG definitions.
EXTRA_CRS = [
    'http://www.opengis.net/def/crs/EPSG/0/4326',
    'http://www.opengis.net/def/crs/EPSG/0/6668',
    'http://www.opengis.net/def/crs/EPSG/0/6673',
    'http://www.opengis.net/def/crs/EPSG/0/3857',
]
WORLD = [-180.0, -90.0, 180.0, 90.0]
# What a client is told about a server fault; the details go to the log only.
SERVER_ERROR = 'internal server error (reported in the server log)'
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')
_BUILDS = itertools.count(1)

# What we implement, stated here rather than taken from pygeoapi: its
# conformance() advertises Features Part 4 (create/replace/delete) for every
# feature collection, and appends to a module-level list on each call.
CONFORMANCE = [
    'http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core',
    'http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/landing-page',
    'http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json',
    'http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/html',
    'http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/oas30',
    'http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections',
    'http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core',
    'http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30',
    'http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html',
    'http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson',
    'http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs',
    'http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables',
    'http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters',
    # CQL2 as ogcapi.cql translates it to SQL, for every collection (they are all GeoPackages).
    'http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter',
    'http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter',
    'http://www.opengis.net/spec/cql2/1.0/conf/cql2-text',
    'http://www.opengis.net/spec/cql2/1.0/conf/cql2-json',
    'http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2',
    'http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators',
    'http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions',
    'http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus',
    'http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas',
    'http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/core-roles-features',
    # Vector tiles of every collection (ogcapi.tiles), WebMercatorQuad only.
    'http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core',
    'http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset',
    'http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list',
    'http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets',
    'http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt',
]
# Landing-page links to APIs we do not mount (processes, jobs, tiles).
_UNMOUNTED_RELS = ('/processes', '/job-list', '/tiling-schemes')

METADATA = {
    'identification': {
        'title': '兵庫県オープンデータ連携基盤 renkei',
        'description': '兵庫県と県内市町のオープンデータを収集・変換し、'
                       'OGC API Features で提供します。',
        'keywords': ['兵庫県', 'オープンデータ', '地理空間情報', 'OGC API'],
        'keywords_type': 'theme',
        'terms_of_service': 'https://creativecommons.org/licenses/by/4.0/',
        'url': 'https://www.pref.hyogo.lg.jp/',
    },
    'license': {'name': 'CC-BY 4.0',
                'url': 'https://creativecommons.org/licenses/by/4.0/'},
    'provider': {'name': '兵庫県オープンデータ連携基盤 renkei',
                 'url': 'https://www.pref.hyogo.lg.jp/'},
    # Placeholder contact: pass metadata= with the operator's real one.
    'contact': {'name': 'renkei 運用担当', 'stateorprovince': '兵庫県',
                'country': 'Japan', 'email': 'renkei@example.jp',
                'url': 'https://www.pref.hyogo.lg.jp/', 'role': 'pointOfContact'},
}
# GSI (国土地理院) tiles: the base map Japanese users expect.
MAP = {'url': 'https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png',
       'attribution': '<a href="https://maps.gsi.go.jp/development/ichiran.html">'
                      '地理院タイル</a>'}


def resource_for(collection: dict, files: FileRegistry | None = None,
                 tables: TableRegistry | None = None) -> dict:
    """One pygeoapi ``resources`` entry for a catalogue collection dict.

    ``files`` (GeoPackages) or ``tables`` (PostGIS, a `postgis:` path) is the registry the
    provider reads through (see OGCAPI).
    """
    postgis = is_postgis(collection['path'])
    if postgis and tables is None:
        raise ValueError('a PostGIS collection needs a database (OGCAPI engine=)')
    bbox = collection.get('bbox')
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        bbox = WORLD
    provider = {
        'type': 'feature',
        'name': POSTGIS_PROVIDER if postgis else PROVIDER,
        'data': collection['path'],
        'layer': collection['layer'],
        'id_field': 'fid',
        # Unknown query parameters reach the provider, which answers 400
        # (Features Part 1 /req/core/query-param-unknown) instead of
        # pygeoapi's default of silently dropping them.
        'include_extra_query_parameters': True,
        'storage_crs': CRS84,
        'crs': [CRS84, *EXTRA_CRS],
    }
    if collection.get('fields'):
        provider['field_info'] = collection['fields']
    if postgis:
        provider[TABLES_KEY] = tables
    elif files is not None:
        provider[FILES_KEY] = files
    return {
        'type': 'collection',
        'title': collection['title'],
        'description': collection.get('description') or collection['title'],
        'keywords': list(collection.get('keywords') or []),
        'links': list(collection.get('links') or []),
        'extents': {'spatial': {'bbox': [float(v) for v in bbox], 'crs': CRS84}},
        'providers': [provider],
    }


def build_config(base_url: str, collections: list, *, metadata=None,
                 map_=None, limits=None, locale_dir=None, files=None, tables=None) -> dict:
    """The pygeoapi config dict: server, metadata, one resource per collection."""
    resources = {}
    base = base_url.rstrip('/')
    for c in collections:
        try:
            res = resources[str(c['id'])] = resource_for(c, files, tables)
            # Every collection has vector tiles (ogcapi.tiles); pygeoapi links only its own
            # tile providers, so the link is ours.
            res['links'].append({'type': 'application/json', 'rel': REL_TILESETS,
                                 'title': 'Vector tiles (Mapbox Vector Tiles)',
                                 'href': f"{base}/collections/{quote(str(c['id']), safe='')}"
                                         '/tiles'})
        except (KeyError, TypeError, ValueError) as err:
            LOGGER.error('collection %r skipped: bad definition (%s)',
                         c.get('id') if isinstance(c, dict) else c, err)
    server = {
            # bind is required by pygeoapi's schema; unused when embedded.
            'bind': {'host': '127.0.0.1', 'port': 0},
            'url': base_url.rstrip('/'),
            'mimetype': 'application/json; charset=UTF-8',
            'encoding': 'utf-8',
            'languages': ['ja', 'en-US'],
            'pretty_print': False,
            # Without limits pygeoapi caps every page at 10 items.
            'limits': dict(limits or {'default_items': 10, 'max_items': 1000,
                                      'on_exceed': 'throttle'}),
            'map': dict(map_ or MAP),
            # Our copies of the templates that loaded assets from CDNs; pygeoapi
            # falls back to its own for every other file.
            'templates': {'path': TEMPLATES},
    }
    if locale_dir:  # compiled message catalogues for the HTML templates (ja)
        server['locale_dir'] = str(locale_dir)
    return {
        'server': server,
        'logging': {'level': 'WARNING'},
        'metadata': copy.deepcopy(metadata or METADATA),
        'resources': resources,
    }


PUBLIC_ONLY = frozenset(('public',))


class _State:
    def __init__(self, token, api, collections=()):
        self.token, self.api, self.collections = token, api, list(collections)


class OGCAPI:
    """Owns a pygeoapi API object that follows the catalogue's version token.

    ``base_url`` is the public URL of the OGC API root, mount prefix included
    (e.g. ``https://renkei.example.jp/ogcapi``): pygeoapi builds every link
    and static URL from it. ``list_collections()`` returns the published
    collections as dicts (id, title, description, keywords, bbox, path,
    layer, count, optional fields); ``version()`` returns a cheap token that
    changes whenever that list or any collection's data changes.
    """

    def __init__(self, base_url: str, list_collections: Callable[[], list],
                 version: Callable[[], str], *, metadata=None, map_=None,
                 limits=None, count_budget_ms=DEFAULT_COUNT_BUDGET_MS, engine=None,
                 keyset_secret=None):
        self.base_url = base_url.rstrip('/')
        self._list_collections = list_collections
        self._version = version
        self._options = {'metadata': metadata, 'map_': map_, 'limits': limits}
        # One API per set of access labels (store.access) for the current version: a caller's
        # API holds only the collections they may read, so every OGC API path (collections,
        # items, queryables, schema, openapi, HTML) answers 404 for the others by itself.
        self._states: dict = {}
        # count_budget_ms: how long a numberMatched no index answers may take (see
        # ogcapi.gpkg_read.GpkgFile.count); None: always exact, 0: only index-answered counts.
        self.files = FileRegistry(count_budget_ms)
        # PostgreSQL mode (store.features_pg): collections whose path is `postgis:<table>`
        # are read through this engine, with the same count budget.
        # keyset_secret: what signs the page ends in next links (the same on every server).
        self.tables = TableRegistry(engine, count_budget_ms, keyset_secret) \
            if engine is not None else None
        self.database = self.tables   # what other PostGIS readers take the engine from
        # Set by the web adapter, which owns the compiled `ja` catalogue for the templates.
        self.locale_dir = None
        self._lock = threading.Lock()
        self._openapi_lock = threading.Lock()

    def api(self, readable: frozenset | None = PUBLIC_ONLY) -> API:
        """The API for the current version and these access labels (None: every
        collection), built once per version and label set.

        Callers keep the returned object for the whole request: a rebuild
        replaces the cached state but never mutates an API in use.
        """
        token = str(self._version())
        key = None if readable is None else tuple(sorted(readable))
        state = self._states.get(key)
        if state is not None and state.token == token:
            return state.api
        with self._lock:
            state = self._states.get(key)
            if state is None or state.token != token:
                state = self._build(token, readable)
                self._states = {k: v for k, v in self._states.items() if v.token == token}
                self._states[key] = state
                paths = [r['providers'][0]['data'] for st in self._states.values()
                         for r in st.api.config['resources'].values()]
                self.files.retain_only([p for p in paths if not is_postgis(p)])
                if self.tables is not None:
                    self.tables.retain_only([table_of(p) for p in paths if is_postgis(p)])
        return state.api

    def _build(self, token, readable):
        # The token is read before the list: if a publish lands in between we
        # cache newer data under the older token and simply rebuild once more,
        # never older data under the newer token.
        collections = [c for c in self._list_collections()
                       if readable is None or c.get('access', 'public') in readable]
        config = build_config(self.base_url, collections, locale_dir=self.locale_dir,
                              files=self.files, tables=self.tables, **self._options)
        # Marks this build in the translated copy pygeoapi caches, see prepare_html.
        config['server']['renkei_build'] = f'{token}#{next(_BUILDS)}'
        api = API(config, None)  # OpenAPI is generated lazily, see openapi()
        api.openapi = None
        LOGGER.info('OGC API built for version %s: %d collections',
                    token, len(config['resources']))
        return _State(token, api, collections)

    def collections(self, readable: frozenset | None = PUBLIC_ONLY) -> list:
        """The collection dicts the current API for these access labels was built from (same
        version as ``api(readable)``): what a caller with them may read."""
        self.api(readable)
        return self._states[None if readable is None else tuple(sorted(readable))].collections

    @staticmethod
    def prepare_html(api: API) -> None:
        """Call before an HTML render with ``api``.

        pygeoapi 0.21 caches the locale-translated config for templates in
        ``l10n._cfg_cache`` keyed by locale only, for the life of the process:
        after a rebuild, templates would see the first config ever rendered
        (collection pages of new collections fail with a 500, and a second
        API in the same process gets the first one's URLs). Entries from
        another build are evicted; a render racing a switch can still use the
        old copy once, and the next HTML request corrects it.
        """
        build = api.config['server'].get('renkei_build')
        cache = getattr(l10n, '_cfg_cache', None)
        if not isinstance(cache, dict):
            return
        for locale, cfg in list(cache.items()):
            if cfg.get('server', {}).get('renkei_build') != build:
                cache.pop(locale, None)

    def openapi(self, api: API) -> dict:
        """The OpenAPI document of ``api``, generated on first use.

        Generation instantiates every provider (cheap here: schemas are cached
        per file), so it is deferred until someone asks for /openapi.
        """
        if api.openapi is None:
            with self._openapi_lock:
                if api.openapi is None:
                    api.openapi = generate_openapi(api.config)
        return api.openapi


def generate_openapi(config: dict) -> dict:
    """pygeoapi's OpenAPI document for ``config``; broken collections dropped.

    pygeoapi builds all item paths in one loop that stops at the first
    failing provider, so collections whose file cannot be opened are removed
    first rather than losing every collection's paths.
    """
    cfg = copy.deepcopy(config)
    for cid, res in list(cfg['resources'].items()):
        try:
            load_plugin('provider', res['providers'][0])
        except (ProviderGenericError, OSError) as err:
            LOGGER.error('collection %s left out of OpenAPI: %s', cid, err)
            del cfg['resources'][cid]
    oas = get_oas(cfg, fail_on_invalid_collection=False)
    for path, item in oas.get('paths', {}).items():
        op = item.get('get')
        if path.endswith('/items') and op is not None:
            op['description'] = (op.get('description') or op.get('summary') or '') + (
                '\n\n' + NUMBER_MATCHED_DOC).lstrip()
    oas.setdefault('paths', {}).update(openapi_paths(
        {cid: res.get('title') or cid for cid, res in cfg['resources'].items()
         if res.get('type') == 'collection'}))
    return declare_query_parameters(oas, cfg)


# What a client can expect of numberMatched (also in the README).
NUMBER_MATCHED_DOC = (
    '`numberMatched` is exact whenever it is present. It is always present without a filter '
    '(the total of the collection version) and with `bbox` alone (counted from the spatial '
    'index). With `filter`, `q` or property filters it is present on the last page (what '
    'precedes it and what it holds) and otherwise when the count takes less than a small time '
    'budget (25 ms by default, and no longer than the page itself took, 5 ms at least), and '
    'omitted otherwise, as OGC API - Features allows, so that counting never costs more than '
    'the page. Once a count of one filter ran out of that budget, the next pages of the same '
    'filter with other values may omit it without trying (PostgreSQL-backed collections). '
    'Page through results with the '
    '`next` link: it is present exactly when more items follow, with or without '
    '`numberMatched`.')


_SORTBY_REF = ('https://raw.githubusercontent.com/opengeospatial/ogcapi-records/master/core/'
               'openapi/parameters/sortby.yaml')


def _query_parameter_components(crs: list) -> dict:
    return {
        'filter': {
            'name': 'filter', 'in': 'query', 'required': False, 'schema': {'type': 'string'},
            'description': 'CQL2 filter (Features Part 3). Property names may be Japanese, '
                           'bare (市町 = \'白浜\') or double-quoted ("市町" = \'白浜\').'},
        'filter-lang': {
            'name': 'filter-lang', 'in': 'query', 'required': False,
            'description': 'Language of filter: cql2-text (default) or cql2-json; cql-text is '
                           'read as cql2-text (the subset GDAL sends is the same in both).',
            'schema': {'type': 'string', 'enum': [*cql.LANGUAGES, *cql.ALIASES],
                       'default': 'cql2-text'}},
        'filter-crs': {
            'name': 'filter-crs', 'in': 'query', 'required': False,
            'description': 'CRS of the geometries in filter (default CRS84).',
            'schema': {'type': 'string', 'format': 'uri', 'enum': crs, 'default': CRS84}},
        'sortby': {
            'name': 'sortby', 'in': 'query', 'required': False, 'style': 'form',
            'explode': False,
            'description': 'Comma-separated property names, each with an optional + '
                           '(ascending) or - (descending) prefix.',
            'schema': {'type': 'array', 'minItems': 1,
                       'items': {'type': 'string', 'pattern': r'^[+-]?\S+$'}}},
    }


def declare_query_parameters(oas: dict, config: dict) -> dict:
    """What the items endpoints take beyond pygeoapi's list: filter, filter-lang (with cql-text:
    GDAL's OAPIF driver filters on the server only when it finds it here), filter-crs, sortby
    (inline: pygeoapi refers to a document on GitHub, which no client here may fetch), and
    POST with a CQL2 JSON body. Property parameters whose name is no CQL2 identifier
    (「建物名等(方書)」) are left out: GDAL would write them bare into cql-text; the server still
    takes them as query parameters."""
    from ogcapi.cql2_text import IDENTIFIER   # the grammar's own rule, not a copy
    ident = re.compile(IDENTIFIER.strip('/') + '$')
    components = oas.setdefault('components', {}).setdefault('parameters', {})
    crs = [CRS84, *EXTRA_CRS]
    components.update(_query_parameter_components(crs))
    ours = [{'$ref': f'#/components/parameters/{n}'} for n in
            ('filter', 'filter-lang', 'filter-crs', 'sortby')]
    for path, item in oas.get('paths', {}).items():
        get = item.get('get')
        if not (path.startswith('/collections/') and path.endswith('/items') and get):
            continue
        kept = []
        for prm in get.get('parameters', []):
            if prm.get('$ref') == _SORTBY_REF or prm.get('name') in components:
                continue
            if prm.get('in') == 'query' and 'name' in prm and not ident.match(prm['name']) \
                    and prm['name'] not in ('bbox-crs', 'properties'):
                continue
            kept.append(prm)
        get['parameters'] = kept + ours
        item['post'] = {
            'summary': get.get('summary', ''), 'description': 'Items filtered by a CQL2 JSON '
            'filter sent as the body; other parameters as for GET.',
            'tags': get.get('tags', []),
            'operationId': (get.get('operationId') or path) + 'Post',
            'parameters': [p for p in get['parameters']
                           if p.get('$ref') not in ('#/components/parameters/filter',
                                                    '#/components/parameters/filter-lang')],
            'requestBody': {'required': True, 'content': {
                'application/json': {'schema': {'type': 'object'}},
                'application/query-cql-json': {'schema': {'type': 'object'}}}},
            'responses': get.get('responses', {}),
        }
    return oas


def conformance(api: API, request) -> tuple:
    """Conformance declaration limited to what renkei implements."""
    headers = request.get_response_headers(**api.api_headers)
    doc = {'conformsTo': list(CONFORMANCE)}
    if request.format == F_HTML:
        content = render_j2_template(api.tpl_config, api.config['server']['templates'],
                                     'conformance.html', doc, request.locale)
        return headers, HTTPStatus.OK, content
    return headers, HTTPStatus.OK, to_json(doc, api.pretty_print)


def landing_page(api: API, request) -> tuple:
    """pygeoapi's landing page without links to APIs that are not mounted."""
    headers, status, content = _landing_page(api, request)
    if status == HTTPStatus.OK and request.format in (None, F_JSON):
        doc = json.loads(content)  # a dozen links: re-serialising is cheap
        doc['links'] = [link for link in doc['links']
                        if not link['rel'].endswith(_UNMOUNTED_RELS)]
        content = to_json(doc, api.pretty_print)
    return headers, status, content


# -- items: our own path for GeoJSON and HTML ------------------------------------------------
# pygeoapi's get_collection_items parses `filter` as ECQL (not CQL2), refuses
# filter-lang=cql2-text, builds a Transformer per request for bbox-crs and escapes Japanese
# as \uXXXX. Items are the hot path, so JSON and HTML are answered here; f=csv and f=jsonld
# still go through pygeoapi (where our provider applies its ECQL filter the same way).

_RESERVED = {'bbox', 'bbox-crs', 'crs', 'f', 'lang', 'limit', 'offset', 'resulttype',
             'datetime', 'sortby', 'properties', 'skipGeometry', 'q', 'filter',
             'filter-lang', 'filter-crs', 'keyset'}


def _items_query(params, provider, provider_def, limits):
    """Provider query kwargs and the output CRS URI; a QueryError says what to fix."""
    supported = list(provider_def.get('crs') or [CRS84])

    def crs_param(name):
        uri = params.get(name)
        if uri is None:
            return CRS84
        if uri not in supported:
            raise QueryError(f'{name} {uri!r} is not supported; use one of '
                             + ', '.join(supported))
        return uri

    try:
        offset = int(params.get('offset') or 0)
    except ValueError:
        raise QueryError('offset value should be an integer')
    if offset < 0:
        raise QueryError('offset value should be positive or zero')
    # pygeoapi's validators raise ValueError with messages about the value they were given.
    try:
        limit = evaluate_limit(params.get('limit'), *limits)
    except ValueError as err:
        raise QueryError(str(err))
    try:
        bbox = validate_bbox(params.get('bbox')) if params.get('bbox') is not None else []
    except ValueError as err:
        raise QueryError(str(err))
    if not all(math.isfinite(v) for v in bbox):
        raise QueryError('bbox values must be finite numbers (no NaN or infinity)')
    bbox_crs = crs_param('bbox-crs')
    if 'bbox-crs' in params and not bbox:
        raise QueryError('bbox-crs specified without bbox')
    if bbox and bbox_crs != CRS84:
        xy = bbox if len(bbox) == 4 else [bbox[0], bbox[1], bbox[3], bbox[4]]
        bbox = transform_bbox(bbox_crs, CRS84, xy)
    out_crs = crs_param('crs')
    spec = None if out_crs == CRS84 else CrsTransformSpec(CRS84, '', out_crs, '')

    fields = provider.fields
    sortby = []
    for s in filter(None, (params.get('sortby') or '').split(',')):
        order, prop = (s[0], s[1:]) if s[0] in '+-' else ('+', s)
        if prop not in fields:
            raise QueryError(f'sortby: unknown property {prop!r}')
        sortby.append({'property': prop, 'order': order})
    select = [p for p in (params.get('properties') or '').split(',') if p]
    unknown = set(select) - set(fields)
    if unknown:
        raise QueryError(f'properties: unknown {sorted(unknown)}')
    filterq = None
    if params.get('filter') is not None:
        filterq = cql.parse(params['filter'], params.get('filter-lang'),
                            crs_param('filter-crs'))
    elif 'filter-lang' in params or 'filter-crs' in params:
        raise QueryError('filter-lang/filter-crs given without filter')
    return dict(
        offset=offset, limit=limit, resulttype=params.get('resulttype') or 'results',
        bbox=bbox, datetime_=params.get('datetime'), sortby=sortby,
        properties=[(k, v) for k, v in params.items() if k not in _RESERVED],
        select_properties=select, skip_geometry=str2bool(params.get('skipGeometry', False)),
        q=params.get('q') or None, filterq=filterq, crs_transform_spec=spec), out_crs


def error_response(api: API, headers: dict, format_, status, code: str,
                   description: str) -> tuple:
    """An OGC API exception document (HTML or JSON), like ``api.get_exception``.

    pygeoapi's own logs every exception at ERROR with the traceback, client mistakes
    included; here the caller decides what is worth the operator's attention.
    """
    doc = {'code': code, 'type': code, 'description': description}
    if format_ == F_HTML:
        headers['Content-Type'] = FORMAT_TYPES[F_HTML]
        return headers, status, render_j2_template(
            api.tpl_config, api.config['server']['templates'], 'exception.html', doc,
            SYSTEM_LOCALE)
    headers['Content-Type'] = FORMAT_TYPES[F_JSON]
    return headers, status, to_json(doc, api.pretty_print)


def server_error(api: API, headers: dict, format_, what: str) -> tuple:
    """500 for the exception being handled: logged with its traceback, never shown."""
    LOGGER.exception('OGC API: %s failed', what)
    return error_response(api, headers, format_, HTTPStatus.INTERNAL_SERVER_ERROR,
                          'NoApplicableCode', SERVER_ERROR)


def provider_error(api: API, headers: dict, format_, err, what: str) -> tuple:
    """A pygeoapi error being handled: 4xx as its message says (QueryError among them), 5xx
    (a file that cannot be read, …) as a server error."""
    if err.http_status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return server_error(api, headers, format_, what)
    return error_response(api, headers, format_, err.http_status_code,
                          err.ogc_exception_code, err.message)


GEOJSON = 'application/geo+json'
# Bodies of POST …/items (Part 3 style; OWSLib's collection_items(cql=…)): a CQL2 JSON filter.
CQL2_JSON_TYPES = ('application/json', 'application/query-cql-json', 'application/cql2+json')


def post_items(api: API, request, dataset: str) -> tuple:
    """POST /collections/{id}/items with a CQL2 JSON filter as the body: the same answer as GET
    with filter=<body>&filter-lang=cql2-json (the other parameters stay in the query string)."""
    headers = request.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
    ctype = next((v for k, v in request.headers.items() if k.lower() == 'content-type'), '')
    ctype = ctype.split(';')[0].strip().lower()
    if ctype not in CQL2_JSON_TYPES:
        return error_response(api, headers, None, HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              'InvalidParameterValue',
                              'POST items takes a CQL2 JSON filter as the body '
                              '(Content-Type: application/json)')
    if 'filter' in request.params or 'filter-lang' in request.params:
        return error_response(api, headers, None, HTTPStatus.BAD_REQUEST,
                              'InvalidParameterValue',
                              'give the filter either as the body or as filter=, not both')
    body = request.data.decode('utf-8', 'replace') if request.data else ''
    params = {**request.params, 'filter': body, 'filter-lang': 'cql2-json'}
    return get_items(api, request, dataset, params=params)


def get_items(api: API, request, dataset: str, params=None) -> tuple:
    """/collections/{id}/items: GeoJSON (UTF-8, unescaped) or HTML; CQL2 and CRS applied."""
    headers = request.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
    params = request.params if params is None else params
    if request.format not in (None, F_JSON, F_HTML):
        if '' in (params.get('sortby') or '-').split(','):
            # pygeoapi's sortby parser indexes each term's first character: an empty term
            # (sortby=, or a,,b) would be an IndexError, a 500 for the client's typo.
            return error_response(api, headers, request.format, HTTPStatus.BAD_REQUEST,
                                  'InvalidParameterValue', 'sortby: empty property name')
        return get_collection_items(api, request, dataset)
    res = api.config['resources'].get(dataset)
    if res is None or res.get('type') != 'collection':
        return error_response(api, headers, request.format, HTTPStatus.NOT_FOUND,
                              'NotFound', 'Collection not found')
    provider_def = res['providers'][0]
    try:
        provider = load_plugin('provider', provider_def)
        limits = (api.config['server'].get('limits', {}), res.get('limits', {}))
        kwargs, out_crs = _items_query(params, provider, provider_def, limits)
        if isinstance(provider, PostGISProvider):
            # Where this page starts, signed by whichever server made the previous page's
            # next link: keyset paging on any server behind the load balancer.
            kwargs['keyset'] = params.get('keyset')
        if isinstance(provider, (PostGISProvider, GPKGProvider)) and request.format != F_HTML:
            # Feature texts (from PostgreSQL, or built column by column), joined as they are
            kwargs['raw_json'] = True
        content = provider.query(language=request.raw_locale, **kwargs)
    except ProviderGenericError as err:
        return provider_error(api, headers, request.format, err, f'items of {dataset}')
    # Anything else is a bug or a broken file: the web adapter answers 500 and logs it.
    headers['Content-Crs'] = f'<{out_crs}>'
    offset, limit = kwargs['offset'], kwargs['limit']
    uri = f'{api.get_collections_url()}/{dataset}/items'
    query = ''.join(f'&{quote(k, safe="")}={quote(str(v), safe=",")}'
                    for k, v in params.items() if k not in ('f', 'offset', 'keyset'))
    tr = lambda s: l10n.translate(s, request.locale)  # noqa: E731
    links = [
        {'type': 'application/geo+json', 'rel': request.get_linkrel(F_JSON),
         'title': tr('This document as GeoJSON'), 'href': f'{uri}?f={F_JSON}{query}'},
        {'type': FORMAT_TYPES[F_JSONLD], 'rel': request.get_linkrel(F_JSONLD),
         'title': tr('This document as RDF (JSON-LD)'), 'href': f'{uri}?f={F_JSONLD}{query}'},
        {'type': FORMAT_TYPES[F_HTML], 'rel': request.get_linkrel(F_HTML),
         'title': tr('This document as HTML'), 'href': f'{uri}?f={F_HTML}{query}'}]
    if offset > 0:
        links.append({'type': 'application/geo+json', 'rel': 'prev',
                      'title': tr('Items (prev)'),
                      'href': f'{uri}?offset={max(0, offset - limit)}{query}'})
    more = getattr(provider, 'more', None)
    if more if more is not None else content.get('numberMatched', 0) > offset + limit:
        links.append({'type': 'application/geo+json', 'rel': 'next',
                      'title': tr('Items (next)'), 'href': f'{uri}?offset={offset + limit}{query}'
                      + (f'&keyset={nxt}' if (nxt := getattr(provider, 'next_keyset', None))
                         else '')})
    links.append({'type': FORMAT_TYPES[F_JSON], 'rel': 'collection',
                  'title': tr(res['title']), 'href': uri.rsplit('/', 1)[0]})
    content['links'] = links
    content['timeStamp'] = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y-%m-%dT%H:%M:%S.%fZ')
    l10n.set_response_language(headers, None, request.locale)
    if request.format == F_HTML:
        content.update(items_path=uri, dataset_path=uri.rsplit('/', 1)[0],
                       collections_path=api.get_collections_url(), offset=offset,
                       id_field=provider.id_field)
        if provider.title_field is not None:
            content['title_field'] = content['id_field'] = provider.title_field
        return headers, HTTPStatus.OK, render_j2_template(
            api.tpl_config, api.get_dataset_templates(dataset),
            'collections/items/index.html', content, request.locale)
    features = content['features']
    if isinstance(features, (RawFeatures, FeatureBytes)):
        content['features'] = []
        rest = json.dumps(content, ensure_ascii=False, separators=(',', ':'),
                          default=json_serial)
        head, tail = rest.split('"features":[]', 1)
        # One join: each + of a megabyte-long page would copy it again.
        if isinstance(features, FeatureBytes):   # UTF-8 already
            body = b''.join((head.encode('utf-8'), b'"features":[', features.body, b']',
                             tail.encode('utf-8')))
        else:
            body = ''.join((head, '"features":[', ','.join(features), ']', tail)).encode()
    else:
        body = json.dumps(content, ensure_ascii=False, separators=(',', ':'),
                          default=json_serial).encode('utf-8')
    headers['Content-Type'] = GEOJSON   # Features Part 1 /req/geojson/content
    return headers, HTTPStatus.OK, body


def get_item(api: API, request, dataset: str, identifier: str) -> tuple:
    """pygeoapi's single feature, as application/geo+json when it is GeoJSON."""
    lean = _lean_item(api, request, dataset, identifier)
    if lean is not None:
        return lean
    headers, status, content = get_collection_item(api, request, dataset, identifier)
    if status == HTTPStatus.OK and request.format in (None, F_JSON):
        headers['Content-Type'] = GEOJSON
    return headers, status, content


def get_queryables(api: API, request, dataset: str) -> tuple:
    """pygeoapi's queryables with the theme schema's Japanese titles (it puts the name)."""
    headers, status, content = get_collection_queryables(api, request, dataset)
    if status != HTTPStatus.OK or request.format not in (None, F_JSON):
        return headers, status, content
    fields = load_plugin('provider', api.config['resources'][dataset]['providers'][0]).fields
    doc = json.loads(content)
    for name, prop in doc.get('properties', {}).items():
        info = fields.get(name) or {}
        prop.update({k: info[k] for k in ('title', 'description') if info.get(k)})
    return headers, status, json.dumps(doc, ensure_ascii=False, separators=(',', ':'))


def _lean_item(api: API, request, dataset: str, identifier: str) -> tuple | None:
    """GeoJSON of one feature of our providers in their storage CRS: what pygeoapi's
    get_collection_item answers, the same document, headers and errors, without its generic
    steps (a scan of all resources, two pyproj CRS builds to learn that CRS84 is CRS84), which
    cost more than the lookup itself (issue 17). None: not that case, pygeoapi answers."""
    if request.format not in (None, F_JSON) or request.params.get('crs'):
        return None
    res = api.config['resources'].get(dataset)
    if res is None or res.get('type') != 'collection' or len(res.get('providers', ())) != 1:
        return None
    provider_def = res['providers'][0]
    if provider_def.get('type') != 'feature' or provider_def.get('name') not in (
            PROVIDER, POSTGIS_PROVIDER) or provider_def.get('storage_crs') != CRS84 \
            or CRS84 not in (provider_def.get('crs') or ()):
        return None
    headers = request.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
    try:
        p = _item_reader(api, dataset, provider_def)
        if p.uri_field:   # never set for our providers; pygeoapi's own path knows it
            return None
        headers['Content-Crs'] = f'<{CRS84}>'
        # get_plugin_locale answers None for a provider without languages (ours), after
        # formatting two log lines: asked only of one that has some.
        prv_locale = l10n.get_plugin_locale(provider_def, request.raw_locale) \
            if provider_def.get('languages') or provider_def.get('language') else None
        content = p.get(identifier, language=prv_locale, crs_transform_spec=None)
    except ProviderGenericError as err:
        return api.get_exception(err.http_status_code, headers, request.format,
                                 err.ogc_exception_code, err.message)
    collections = api.get_collections_url()
    uri = f'{collections}/{dataset}/items/{identifier}'
    # pygeoapi passes its own link titles through l10n.translate too, which returns a plain
    # string as it is: only the collection's title may be a language struct.
    content.setdefault('links', []).extend([
        {'type': FORMAT_TYPES[F_JSON], 'rel': 'root',
         'title': 'The landing page of this server as JSON',
         'href': f'{api.base_url}?f={F_JSON}'},
        {'type': FORMAT_TYPES[F_HTML], 'rel': 'root',
         'title': 'The landing page of this server as HTML',
         'href': f'{api.base_url}?f={F_HTML}'},
        {'rel': request.get_linkrel(F_JSON), 'type': 'application/geo+json',
         'title': 'This document as JSON', 'href': f'{uri}?f={F_JSON}'},
        {'rel': request.get_linkrel(F_JSONLD), 'type': FORMAT_TYPES[F_JSONLD],
         'title': 'This document as RDF (JSON-LD)', 'href': f'{uri}?f={F_JSONLD}'},
        {'rel': request.get_linkrel(F_HTML), 'type': FORMAT_TYPES[F_HTML],
         'title': 'This document as HTML', 'href': f'{uri}?f={F_HTML}'},
        {'rel': 'collection', 'type': FORMAT_TYPES[F_JSON],
         'title': l10n.translate(res['title'], request.locale),
         'href': f'{collections}/{dataset}'}])
    l10n.set_response_language(headers, prv_locale, request.locale)
    headers['Content-Type'] = GEOJSON
    if api.pretty_print:
        return headers, HTTPStatus.OK, to_json(content, True)
    # What the web adapter would make of to_json's text (Japanese unescaped, compact), in one
    # step rather than three.
    return headers, HTTPStatus.OK, json.dumps(content, ensure_ascii=False,
                                              separators=(',', ':'), default=json_serial)


def _item_reader(api: API, dataset: str, provider_def: dict):
    """The provider that answers items by id of ``dataset`` in ``api``, built once per API
    (pygeoapi builds one per request: its set-up cost more than the lookup, issue 17). An API
    is one catalogue version and one set of access labels, so a new version gets new readers;
    a GeoPackage replaced under the same path without a publish is still noticed
    (``is_current``). Our providers' ``get`` keeps no state between calls, so threads share
    one."""
    readers = api.__dict__.setdefault('_renkei_item_readers', {})
    p = readers.get(dataset)
    if p is None or not p.is_current():
        p = readers[dataset] = load_plugin('provider', provider_def)
    return p
