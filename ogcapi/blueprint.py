"""Flask adapter for the OGC API: routes -> pygeoapi's framework-free core.

pygeoapi.flask_app is deliberately not imported: it reads PYGEOAPI_CONFIG at
import time and holds one fixed API in module globals. Each view here asks
``OGCAPI.api()`` for the API of the current catalogue version, so collections
published by a harvest in another process appear without a restart.
"""

import functools
import importlib
import json
import logging
import os

from flask import Blueprint, Response, abort, request, send_from_directory
from flask_cors import CORS

import pygeoapi
from pygeoapi.api import (F_HTML, APIRequest, describe_collections,
                          get_collection_schema, openapi_)
from pygeoapi.error import GenericError

from ogcapi import api as core
from ogcapi import tiles
from ogcapi.api import OGCAPI

LOGGER = logging.getLogger(__name__)

PYGEOAPI_STATIC = os.path.join(os.path.dirname(pygeoapi.__file__), 'static')
# Headers a browser client needs to read: CRS of the coordinates, language.
EXPOSED_HEADERS = ['Content-Crs', 'Content-Language', 'Link', 'ETag']
_REENCODE_MAX = 2_000_000
VENDOR = {'leaflet': 'xstatic.pkg.leaflet', 'bootstrap': 'xstatic.pkg.bootstrap',
          'leaflet-markercluster': 'xstatic.pkg.leaflet_markercluster'}
# pygeoapi ships no Japanese catalogue (and its wheel no compiled ones at all): ours, for the
# HTML templates' own words (ホーム, コレクション, …); data titles are Japanese already.
# locale/ja/LC_MESSAGES/messages.po is the source; its .mo is compiled by the build (setup.py).
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
LOCALE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'locale')


def register_ogcapi(app, ogcapi: OGCAPI, prefix: str = '/ogcapi',
                    readable=lambda: core.PUBLIC_ONLY) -> Blueprint:
    """Mount the OGC API at ``prefix`` (must be the path of ogcapi.base_url).

    ``readable()`` gives the access labels of the caller of the current request
    (store.access.labels; None for all): each request sees only those collections."""
    prefix = '/' + prefix.strip('/')
    if not ogcapi.base_url.endswith(prefix):
        # Links are built from base_url, so a mismatch yields dead links.
        LOGGER.warning('OGC API base_url %s does not end with mount prefix %s',
                       ogcapi.base_url, prefix)

    if ogcapi.locale_dir is None:
        ogcapi.locale_dir = LOCALE_DIR
    bp = Blueprint('ogcapi', __name__, url_prefix=prefix,
                   static_folder=PYGEOAPI_STATIC, static_url_path='/static')

    def run(fn, *args, check_format=True):
        api = ogcapi.api(readable())  # one API object for the whole request
        flask_request = request._get_current_object()   # one proxy lookup, not one per use
        req = _APIRequest.of(flask_request, api.locales)
        if req.format == F_HTML:
            ogcapi.prepare_html(api)
        if check_format and not req.is_valid():
            headers, status, content = api.get_format_exception(req)
        else:
            what = f'{flask_request.method} {flask_request.full_path}'
            try:
                headers, status, content = fn(api, req, *args)
            except GenericError as err:
                # Core functions catch provider errors only around query();
                # elsewhere (e.g. queryables) they would surface as a bare 500.
                headers = req.get_response_headers(**api.api_headers)
                headers, status, content = core.provider_error(
                    api, headers, req.format, err, what)
            except Exception:  # noqa: BLE001 - a bug or a broken file: ours, not the client's
                headers = req.get_response_headers(**api.api_headers)
                headers, status, content = core.server_error(api, headers, req.format, what)
        return _response(headers, status, content)

    def openapi_view(api, req):
        ogcapi.openapi(api)
        return openapi_(api, req)

    @bp.route('')
    @bp.route('/')
    def landing():
        return run(core.landing_page)

    @bp.route('/conformance')
    def conformance():
        return run(core.conformance)

    @bp.route('/openapi')
    def openapi():
        return run(openapi_view)

    @bp.route('/collections')
    def collections():
        return run(describe_collections)

    @bp.route('/collections/<cid>')
    def collection(cid):
        return run(describe_collections, cid)

    @bp.route('/collections/<cid>/queryables')
    def queryables(cid):
        return run(core.get_queryables, cid)

    @bp.route('/collections/<cid>/schema')
    def schema(cid):
        return run(get_collection_schema, cid)

    @bp.route('/collections/<cid>/items', methods=['GET', 'POST'])
    def items(cid):
        # get_items validates f= itself (it also accepts f=csv).
        if request.method == 'POST':   # a CQL2 JSON filter as the body (OWSLib's cql=)
            return run(core.post_items, cid, check_format=False)
        return run(core.get_items, cid, check_format=False)

    @bp.route('/collections/<cid>/items/<iid>')
    def item(cid, iid):
        return run(core.get_item, cid, iid)

    @bp.route('/assets/<path:filename>')
    def assets(filename):
        # Our page scripts (ogcapi/assets): the CSP allows no inline script.
        return send_from_directory(ASSETS, filename, max_age=3600)

    def tiles_answer(fn, *args, **kwargs):
        status, headers, body = fn(ogcapi.api(readable()), *args, **kwargs)
        return Response(body, status=int(status), headers=headers)

    def tiles_format(*allowed):
        f = request.args.get('f')
        if f is not None and f not in allowed:
            abort(Response(json.dumps({'code': 'InvalidParameterValue',
                                       'description': f'f={f} is not offered here; use '
                                                      + ' or '.join(allowed)}),
                           status=400, content_type='application/json; charset=utf-8'))
        return f

    @bp.route('/collections/<cid>/tiles')
    def tilesets(cid):
        tiles_format('json')
        return tiles_answer(tiles.tilesets, ogcapi.base_url, cid)

    @bp.route(f'/collections/<cid>/tiles/{tiles.TMS_ID}')
    @bp.route(f'/collections/<cid>/tiles/{tiles.TMS_ID}/metadata')
    def tileset(cid):
        if tiles_format('json', 'tilejson') == 'tilejson':
            return tiles_answer(tiles.tilejson, ogcapi.base_url, cid)
        return tiles_answer(tiles.tileset, ogcapi.base_url, cid)

    @bp.route(f'/collections/<cid>/tiles/{tiles.TMS_ID}/<int:z>/<int:y>/<int:x>')
    def tile(cid, z, y, x):
        tiles_format('mvt')
        return tiles_answer(
            tiles.tile, cid, z, y, x, if_none_match=request.headers.get('If-None-Match'),
            accept_gzip=request.accept_encodings.quality('gzip') > 0)

    @bp.route('/vendor/<name>/<path:filename>')
    def vendor(name, filename):
        # Browser libraries of ogcapi/templates, from xstatic packages: no CDN,
        # so the HTML pages work offline and on LG-WAN (DESIGN.md).
        if name not in VENDOR:
            abort(404)
        pkg = importlib.import_module(VENDOR[name])
        return send_from_directory(pkg.BASE_DIR, filename, max_age=86400)

    # pygeoapi's cors setting only applies to its own Flask app.
    hooks = bp.after_request_funcs.setdefault(None, [])
    before = list(hooks)
    CORS(bp, origins='*', send_wildcard=True, methods=['GET', 'HEAD', 'POST', 'OPTIONS'],
         expose_headers=EXPOSED_HEADERS)
    hooks[:] = [f if f in before else _remembered_cors(f) for f in hooks]
    app.register_blueprint(bp)
    return bp


def _remembered_cors(cors_after_request):
    """flask-cors's after_request hook of this blueprint, its headers computed once per kind of
    request: they depend only on the method and the request's CORS headers (Origin,
    Access-Control-Request-*), its options being fixed and its one resource ('/*') matching
    every path here; flask-cors's own steps cost as much as three other hooks together
    (issue 17). Each kind is asked of flask-cors itself, on an empty response, so the headers
    are the ones it writes; a response that already has Access-Control-Allow-Origin is left to
    it too."""

    @functools.lru_cache(maxsize=256)
    def headers(method, origin, request_method, request_headers, private_network):
        probe = Response()
        known = len(probe.headers)
        cors_after_request(probe)   # flask-cors only adds
        return tuple(list(probe.headers)[known:])

    def cors(resp):
        for key, value in resp.headers:
            if value and key.lower() == 'access-control-allow-origin':
                return cors_after_request(resp)
        env = request.environ
        for key, value in headers(request.method, env.get('HTTP_ORIGIN'),
                                  env.get('HTTP_ACCESS_CONTROL_REQUEST_METHOD'),
                                  env.get('HTTP_ACCESS_CONTROL_REQUEST_HEADERS'),
                                  env.get('HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK')):
            resp.headers.add(key, value)
        return resp

    return cors


class _RequestView:
    """What pygeoapi's APIRequest reads of a Flask request, with the headers as a plain dict:
    it scans every header for each one it looks up (locale, format, then the copy it keeps),
    and a dict scans several times faster than werkzeug's view of the WSGI environ (issue 17).
    Same values: the path as pygeoapi takes it from a Flask request (without its slashes)."""

    __slots__ = ('args', 'headers', 'path_info')

    def __init__(self, req):
        self.args = req.args
        self.headers = _headers_dict(req.environ)
        self.path_info = req.environ['PATH_INFO'].strip('/')


_ENTITY_HEADERS = ('CONTENT_TYPE', 'CONTENT_LENGTH')


def _headers_dict(environ) -> dict:
    """dict(request.headers): the same names and values as werkzeug's EnvironHeaders yields
    them, in one loop rather than a generator step per header (issue 17)."""
    out = {}
    for key, value in environ.items():
        if key[:5] == 'HTTP_':
            if key != 'HTTP_CONTENT_TYPE' and key != 'HTTP_CONTENT_LENGTH':
                out[key[5:].replace('_', '-').title()] = value
        elif value and key in _ENTITY_HEADERS:
            out[key.replace('_', '-').title()] = value
    return out


class _APIRequest(APIRequest):
    """pygeoapi's request of a Flask request (its from_flask), the body read when asked for:
    only POST items reads one, and reading none costs a stream set-up on every GET."""

    @classmethod
    def of(cls, flask_request, locales):
        req = cls(_RequestView(flask_request), locales)
        req._flask_request = flask_request
        return req

    @property
    def data(self) -> bytes:
        return self._flask_request.data


def _response(headers, status, content):
    headers = dict(headers)
    ctype = headers.get('Content-Type', '')
    if isinstance(content, str) and 'json' in ctype and '\\u' in content \
            and len(content) < _REENCODE_MAX:
        # pygeoapi's to_json escapes Japanese as \uXXXX. Items (large) are serialised by
        # ogcapi.api.get_items already; other documents are small, so a round trip is cheap.
        content = json.dumps(json.loads(content), ensure_ascii=False, separators=(',', ':'))
    # pygeoapi sends text/html and application/json without a charset; Flask
    # encodes str bodies as UTF-8, so say so (HTML in particular needs it).
    if ctype and 'charset' not in ctype.lower() and (
            isinstance(content, str) or 'json' in ctype):
        headers['Content-Type'] = f'{ctype}; charset=utf-8'
    return Response(content, status=int(status), headers=headers)
