"""OGC API end to end: real GeoPackages, a real HTTP server, real clients.

The app is a plain Flask app with register_ogcapi, served by werkzeug on
127.0.0.1; clients are OWSLib, GDAL's OAPIF driver (through pyogrio) and
requests. GDAL runs in a subprocess: pyogrio holds the GIL while GDAL
downloads pages, which would starve a server thread in the same process.
"""

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import pytest
import requests
from flask import Flask, request
from shapely.geometry import Polygon, box
from werkzeug.serving import make_server

from ogcapi.blueprint import register_ogcapi
from ogcapi.api import OGCAPI, build_config
from tests import pg_features
from tests.servers import live_server

HYOGO = [134.25, 34.15, 135.47, 35.68]
CITIES = ['姫路市', '加古川市', '加西市', '養父市', '神戸市']
N_SCHOOLS = 2500
JGD2011 = 'http://www.opengis.net/def/crs/EPSG/0/6668'


def make_points(path, n, seed, prefix='避難所'):
    rng = np.random.default_rng(seed)
    names = [f'{prefix}{i:05d}' for i in range(n)]
    names[0] = '姫路市立白浜小学校'
    gdf = gpd.GeoDataFrame({
        'name': names,
        'city': rng.choice(CITIES, n),
        'capacity': rng.integers(10, 1000, n),
        'barrier_free': rng.integers(0, 2, n).astype(bool),
    }, geometry=gpd.points_from_xy(rng.uniform(134.25, 135.47, n),
                                   rng.uniform(34.15, 35.68, n)), crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')
    return gdf


def make_wards(path, **options):
    gdf = gpd.GeoDataFrame({
        'name': ['灘区', '須磨区', '長田区'],
        'population': [136000, 155000, 92000],
    }, geometry=[
        # Triangle whose MBR covers the test bbox but whose area does not.
        Polygon([(134.90, 34.60), (135.00, 34.60), (134.90, 34.70)]),
        box(134.95, 34.65, 135.05, 34.75),    # contains the test bbox
        box(134.975, 34.675, 134.985, 34.685),  # inside the test bbox
    ], crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG', **options)
    return gdf


def collection(cid, path, title, count):
    return {'id': cid, 'title': title, 'description': f'{title}（テスト）',
            'keywords': ['兵庫県', 'テスト'], 'bbox': HYOGO, 'path': str(path),
            'layer': 'features', 'count': count}


class FakeCatalog:
    """Stands in for the store: a collection list and a version token."""

    def __init__(self, collections):
        self.collections, self.token = list(collections), 1

    def list_collections(self):
        return list(self.collections)

    def version(self):
        return str(self.token)

    def publish(self, collections):
        self.collections = list(collections)
        self.token += 1


@contextmanager
def serve(catalog):
    # Bind first (port 0), then build the app: base_url needs the real port.
    holder = {'log': []}
    srv = make_server('127.0.0.1', 0, lambda env, sr: holder['app'](env, sr),
                      threaded=True)
    base = f'http://127.0.0.1:{srv.server_port}/ogcapi'
    app = Flask(__name__)
    # Counts always exact (no time budget): these tests compare numberMatched with the data on
    # a busy machine; test_ogcapi_counts covers the budget and the omitted count.
    register_ogcapi(app, OGCAPI(base, pg_features.listing(catalog.list_collections),
                                catalog.version, count_budget_ms=None,
                                **pg_features.ogcapi_options()))
    app.before_request(lambda: holder['log'].append(request.full_path))
    holder['app'] = app
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, holder['log']
    finally:
        srv.shutdown()
        thread.join(5)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('gpkg')
    return {
        'dir': d,
        'schools': make_points(d / 'schools.gpkg', N_SCHOOLS, 1),
        'wards': make_wards(d / 'wards.gpkg'),
        'wards_noindex': make_wards(d / 'wards_noindex.gpkg', SPATIAL_INDEX='NO'),
    }


@pytest.fixture(scope='module')
def server(data):
    d = data['dir']
    schools = collection('schools', d / 'schools.gpkg', '学校・避難所', N_SCHOOLS)
    # Both shapes the store writes: {name: type} and {name: {type, title, ...}}.
    schools['fields'] = {'capacity': {'type': 'integer', 'title': '収容人数',
                                      'description': '想定収容人数（人）'},
                         'city': 'string'}
    catalog = FakeCatalog([
        schools,
        collection('kobe.wards', d / 'wards.gpkg', '神戸市の区', 3),
        collection('kobe-wards-noindex', d / 'wards_noindex.gpkg', '神戸市の区（索引なし）', 3),
    ])
    with serve(catalog) as (base, log):
        yield base, log


def get(url, **params):
    return requests.get(url, params=params, timeout=30)


def test_generated_config_is_valid_for_pygeoapi(data):
    from pygeoapi.config import validate_config
    c = collection('a.b-c_1', data['dir'] / 'schools.gpkg', '学校', N_SCHOOLS)
    c['fields'] = {'capacity': {'type': 'integer', 'title': '収容人数'}}
    cfg = build_config('http://127.0.0.1:1/ogcapi', [c])
    assert validate_config(cfg)
    assert cfg['server']['limits']['max_items'] == 1000
    assert cfg['server']['languages'] == ['ja', 'en-US']


def test_landing_conformance_openapi(server):
    base, _ = server
    for url in (base, base + '/'):
        r = get(url)
        assert r.status_code == 200
        doc = r.json()
        assert doc['title'] == '兵庫県オープンデータ連携基盤 renkei'
        rels = {link['rel'] for link in doc['links']}
        assert {'service-desc', 'conformance', 'data'} <= rels
        assert not any(rel.endswith('/processes') for rel in rels)
    conf = get(base + '/conformance').json()['conformsTo']
    assert 'http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson' in conf
    assert not any('features-4' in c for c in conf)
    assert 'http://www.opengis.net/spec/cql2/1.0/conf/cql2-text' in conf
    oas = get(base + '/openapi')
    assert oas.status_code == 200
    paths = oas.json()['paths']
    assert '/collections/schools/items' in paths
    assert '/collections/kobe.wards/items/{featureId}' in paths
    limit = next(p for p in paths['/collections/schools/items']['get']['parameters']
                 if p.get('name') == 'limit')
    assert limit['schema']['maximum'] == 1000


def test_owslib_lists_and_pages(server, data):
    from owslib.ogcapi.features import Features
    base, _ = server
    api = Features(base)
    assert {c['id'] for c in api.collections()['collections']} == {
        'schools', 'kobe.wards', 'kobe-wards-noindex'}
    assert 'schools' in api.feature_collections()
    seen = []
    offset = 0
    while True:
        page = api.collection_items('schools', limit=700, offset=offset)
        assert page['numberMatched'] == N_SCHOOLS
        seen += [f['id'] for f in page['features']]
        if page['numberReturned'] < 700:
            break
        offset += 700
    assert seen == list(range(1, N_SCHOOLS + 1))
    first = api.collection_items('schools', limit=1)['features'][0]
    assert first['properties']['name'] == '姫路市立白浜小学校'
    assert api.collection_item('schools', '1')['properties']['name'] == '姫路市立白浜小学校'


GDAL_READ = """
import sys, pyogrio
df = pyogrio.read_dataframe(sys.argv[1])
sys.stdout.write(df.to_json(ensure_ascii=False))
"""


def test_gdal_oapif_reads_every_feature(server, data):
    base, log = server
    r = subprocess.run(
        [sys.executable, '-c', GDAL_READ, f'OAPIF:{base}/collections/schools'],
        capture_output=True, timeout=180, env=dict(os.environ, GDAL_HTTP_TIMEOUT='60'))
    assert r.returncode == 0, r.stderr.decode(errors='replace')[-2000:]
    features = json.loads(r.stdout.decode('utf-8'))['features']
    src = data['schools']
    assert len(features) == N_SCHOOLS
    by_name = {f['properties']['name']: f for f in features}
    assert len(by_name) == N_SCHOOLS
    for i in (0, 999, 1000, 2499):  # across page boundaries
        f = by_name[src.name.iloc[i]]
        assert f['properties']['city'] == src.city.iloc[i]
        assert f['properties']['capacity'] == src.capacity.iloc[i]
        x, y = f['geometry']['coordinates']
        assert (x, y) == pytest.approx((src.geometry.iloc[i].x, src.geometry.iloc[i].y), abs=1e-9)
    assert '姫路市立白浜小学校' in by_name
    # GDAL really followed next links rather than asking for everything.
    assert any('/schools/items' in u and 'offset=2000' in u for u in log)


def test_bbox_points_exact(server, data):
    base, _ = server
    bbox = (134.6, 34.7, 134.9, 34.95)
    src = data['schools']
    inside = src.cx[bbox[0]:bbox[2], bbox[1]:bbox[3]]
    doc = get(f'{base}/collections/schools/items', bbox=','.join(map(str, bbox)),
              limit=1000).json()
    assert doc['numberMatched'] == len(inside) == doc['numberReturned']
    assert {f['properties']['name'] for f in doc['features']} == set(inside.name)
    hits = get(f'{base}/collections/schools/items', bbox=','.join(map(str, bbox)),
               resulttype='hits').json()
    assert hits['numberMatched'] == len(inside) and hits['features'] == []


@pytest.mark.parametrize('cid', ['kobe.wards', 'kobe-wards-noindex'])
def test_bbox_polygons_use_geometry_not_envelope(server, cid):
    base, _ = server
    doc = get(f'{base}/collections/{cid}/items', bbox='134.97,34.67,134.99,34.69').json()
    assert sorted(f['properties']['name'] for f in doc['features']) == ['長田区', '須磨区']
    assert doc['numberMatched'] == 2
    suma = next(f for f in doc['features'] if f['properties']['name'] == '須磨区')
    assert suma['geometry']['type'] == 'Polygon'
    assert [134.95, 34.65] in [list(c) for c in suma['geometry']['coordinates'][0]]


def test_item_by_id(server, data):
    base, _ = server
    r = get(f'{base}/collections/schools/items/5')
    assert r.status_code == 200
    f = r.json()
    src = data['schools'].iloc[4]
    assert f['id'] == 5
    assert f['properties'] == {'name': src['name'], 'city': src.city,
                               'capacity': int(src.capacity),
                               'barrier_free': bool(src.barrier_free)}
    assert f['geometry']['coordinates'] == pytest.approx([src.geometry.x, src.geometry.y])
    assert r.headers['Content-Crs'] == '<http://www.opengis.net/def/crs/OGC/1.3/CRS84>'


def test_polygon_item_by_id_is_its_source_geometry(server, data):
    # Read from its blob without shapely (ogcapi.gpkg_read): vertex for vertex what was written.
    from shapely.geometry import shape
    base, _ = server
    for fid, (name, geom) in enumerate(zip(data['wards'].name, data['wards'].geometry), 1):
        f = get(f'{base}/collections/kobe.wards/items/{fid}').json()
        assert f['properties']['name'] == name
        assert f['geometry']['type'] == 'Polygon'
        assert shape(f['geometry']).equals_exact(geom, 0)


CRS84 = 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'


@pytest.mark.parametrize('item, params', [
    ('5', {}), ('1', {'lang': 'en'}), ('2500', {'f': 'json'}), ('999999', {}), ('abc', {}),
    ('-1', {}), ('99999999999999999999999', {}), ('3', {'lang': 'ja', 'f': 'json'}),
])
@pytest.mark.parametrize('cid', ['schools', 'kobe.wards'])
def test_item_lean_path_answers_as_pygeoapi(server, cid, item, params):
    # An item without crs= is answered by ogcapi.api._lean_item; crs=CRS84 (the same output
    # CRS) still goes through pygeoapi's get_collection_item: both must be the same bytes.
    base, _ = server
    url = f'{base}/collections/{cid}/items/{item}'
    lean = requests.get(url, params=params, timeout=30)
    stock = requests.get(url, params={**params, 'crs': CRS84}, timeout=30)
    assert (lean.status_code, lean.content) == (stock.status_code, stock.content)
    drop = ('Date', 'Content-Length')
    assert [(k, v) for k, v in lean.headers.items() if k not in drop] == \
        [(k, v) for k, v in stock.headers.items() if k not in drop]


@pytest.mark.parametrize('path', [
    '/collections/nope', '/collections/nope/items', '/collections/nope/items/1',
    '/collections/nope/queryables', '/collections/nope/schema',
    '/collections/schools/items/999999', '/collections/schools/items/abc',
])
def test_not_found(server, path):
    base, _ = server
    r = get(base + path)
    assert r.status_code == 404
    assert r.json()['code'] == 'NotFound'


@pytest.mark.parametrize('params', [
    {'filter': "nosuchfield = '姫路市立白浜小学校'"},
    {'filter': 'capacity > 10', 'filter-lang': 'ecql'},
    {'filter': 'capacity >'},
    {'filter': "capacity = 'many'"},
    {'filter': "S_WITHIN(geometry, POINT(135 35))"},
    {'filter-lang': 'cql2-text'},
    {'bbox-crs': 'http://www.opengis.net/def/crs/EPSG/0/4326'},
    {'datetime': '2024-01-01T00:00:00Z'},
    {'nosuchfield': '1'},
    {'capacity': 'many'},
    {'barrier_free': 'maybe'},
    {'sortby': 'nosuchfield'},
    {'resulttype': 'everything'},
    {'limit': '0'},
    {'bbox': '135,34,134,35'},
    {'crs': 'http://www.opengis.net/def/crs/EPSG/0/32654'},
    {'f': 'xml'},
])
def test_unsupported_is_rejected_not_ignored(server, params):
    base, _ = server
    r = get(f'{base}/collections/schools/items', **params)
    assert r.status_code == 400, r.text


def test_property_filter_sort_select_q(server, data):
    base, _ = server
    src = data['schools']
    himeji = src[src.city == '姫路市']
    doc = get(f'{base}/collections/schools/items', city='姫路市', limit=1000,
              sortby='-capacity').json()
    assert doc['numberMatched'] == len(himeji)
    caps = [f['properties']['capacity'] for f in doc['features']]
    assert caps == sorted(himeji.capacity, reverse=True)[:len(caps)]
    doc = get(f'{base}/collections/schools/items', capacity=int(src.capacity.iloc[0]),
              properties='name', skipGeometry='true').json()
    assert all(set(f['properties']) == {'name'} and f['geometry'] is None
               for f in doc['features'])
    assert '姫路市立白浜小学校' in [f['properties']['name'] for f in doc['features']]
    doc = get(f'{base}/collections/schools/items', q='白浜').json()
    assert [f['properties']['name'] for f in doc['features']] == ['姫路市立白浜小学校']


def test_output_crs_jgd2011(server, data):
    base, _ = server
    r = get(f'{base}/collections/schools/items/1', crs=JGD2011)
    assert r.status_code == 200
    assert r.headers['Content-Crs'] == f'<{JGD2011}>'
    lat, lon = r.json()['geometry']['coordinates']  # EPSG axis order
    p = data['schools'].geometry.iloc[0]
    assert (lon, lat) == pytest.approx((p.x, p.y), abs=1e-9)


def test_queryables_schema_html_static_cors(server):
    base, _ = server
    q = get(f'{base}/collections/schools/queryables').json()
    assert {'name', 'city', 'capacity', 'barrier_free'} <= set(q['properties'])
    assert q['properties']['capacity']['type'] == 'integer'
    s = get(f'{base}/collections/schools/schema').json()
    assert s['properties']['barrier_free']['type'] == 'boolean'
    assert s['properties']['capacity']['title'] == '収容人数'
    assert 'title' not in s['properties']['city']
    for path in ('', '/collections', '/collections/schools',
                 '/collections/schools/items', '/collections/schools/items/1',
                 '/conformance', '/openapi'):
        r = get(base + path, f='html')
        assert r.status_code == 200, path
        assert r.headers['Content-Type'].startswith('text/html')
        assert 'charset=utf-8' in r.headers['Content-Type']
    html = get(f'{base}/collections/schools', f='html').text
    assert '学校・避難所' in html
    # Links in HTML come from this server's config, not another app's.
    assert f'{base}/static/css/default.css' in html
    css = get(f'{base}/static/css/default.css')
    assert css.status_code == 200 and css.headers['Content-Type'].startswith('text/css')
    r = requests.get(f'{base}/collections/schools/items', params={'limit': 1},
                     headers={'Origin': 'https://example.org'}, timeout=30)
    assert r.headers['Access-Control-Allow-Origin'] == '*'
    assert 'Content-Crs' in r.headers['Access-Control-Expose-Headers']


@contextmanager
def _flask_cors_reference():
    """A plain Flask app with flask-cors as the OGC API blueprint configures it, every answer
    computed by flask-cors itself: what the blueprint's remembered CORS headers must equal."""
    from flask_cors import CORS
    from ogcapi.blueprint import EXPOSED_HEADERS
    app = Flask('cors-reference')
    app.add_url_rule('/x', 'x', lambda: 'ok', methods=['GET', 'POST'])
    CORS(app, origins='*', send_wildcard=True, methods=['GET', 'HEAD', 'POST', 'OPTIONS'],
         expose_headers=EXPOSED_HEADERS)
    with live_server(app) as base:
        yield f'{base}/x'


def test_cors_headers_are_flask_cors_own_for_every_kind_of_request(server):
    # The blueprint keeps flask-cors's headers per kind of request (issue 17): each kind, asked
    # twice and between others, gets what flask-cors answers it.
    base, _ = server
    kinds = [
        ('GET', {}),
        ('GET', {'Origin': 'https://example.org'}),
        ('GET', {'Origin': 'https://other.example.jp'}),
        ('OPTIONS', {'Origin': 'https://example.org', 'Access-Control-Request-Method': 'POST',
                     'Access-Control-Request-Headers': 'Content-Type, X-Custom'}),
        ('OPTIONS', {'Origin': 'https://example.org', 'Access-Control-Request-Method': 'DELETE'}),
        ('OPTIONS', {'Origin': 'https://example.org', 'Access-Control-Request-Method': 'GET',
                     'Access-Control-Request-Private-Network': 'true'}),
        ('HEAD', {'Origin': 'https://example.org'}),
    ]

    def cors(r):
        return sorted((k, v) for k, v in r.headers.items()
                      if k.lower().startswith('access-control-') or k.lower() == 'vary'
                      and 'Origin' in v)

    with _flask_cors_reference() as reference:
        for method, headers in kinds + kinds[::-1]:
            ours = requests.request(method, f'{base}/collections/schools/items/1',
                                    headers=headers, timeout=30)
            theirs = requests.request(method, reference, headers=headers, timeout=30)
            assert cors(ours) == cors(theirs), (method, headers)
            assert ours.headers['Access-Control-Allow-Origin'] == '*'


def test_live_collections_without_restart(data, tmp_path):
    d = data['dir']
    schools = collection('schools', d / 'schools.gpkg', '学校・避難所', N_SCHOOLS)
    wards = collection('kobe.wards', d / 'wards.gpkg', '神戸市の区', 3)
    catalog = FakeCatalog([schools, wards])
    with serve(catalog) as (base, _):
        ids = {c['id'] for c in get(base + '/collections').json()['collections']}
        assert ids == {'schools', 'kobe.wards'}
        assert '/collections/shelters2/items' not in get(base + '/openapi').json()['paths']
        assert get(f'{base}/collections/schools', f='html').status_code == 200

        make_points(tmp_path / 'shelters2.gpkg', 40, 7, prefix='加西市避難所')
        catalog.publish([schools, collection('shelters2', tmp_path / 'shelters2.gpkg',
                                             '加西市の避難所', 40)])
        ids = {c['id'] for c in get(base + '/collections').json()['collections']}
        assert ids == {'schools', 'shelters2'}
        doc = get(f'{base}/collections/shelters2/items', limit=100).json()
        assert doc['numberMatched'] == 40
        assert doc['features'][1]['properties']['name'] == '加西市避難所00001'
        assert '/collections/shelters2/items' in get(base + '/openapi').json()['paths']
        html = get(f'{base}/collections/shelters2', f='html')
        assert html.status_code == 200 and '加西市の避難所' in html.text
        assert get(f'{base}/collections/kobe.wards').status_code == 404
        assert get(f'{base}/collections/kobe.wards/items').status_code == 404

        # A new version of a file at the same path (atomic replace) is seen too.
        make_points(tmp_path / 'next.gpkg', 60, 8)
        os.replace(tmp_path / 'next.gpkg', tmp_path / 'shelters2.gpkg')
        catalog.publish(catalog.collections)
        assert get(f'{base}/collections/shelters2/items').json()['numberMatched'] == 60


@pytest.mark.embedded_only(reason='a GeoPackage replaced on disk: embedded mode only')
def test_item_by_id_follows_a_file_replaced_without_a_publish(tmp_path):
    # Items by id are read through a provider kept for the API's version (ogcapi.api's item
    # readers); a file replaced under the same path is still a new version to it.
    path = tmp_path / 'swap.gpkg'
    make_points(path, 40, 7, prefix='加西市避難所')
    catalog = FakeCatalog([collection('swap', path, '入替', 40)])
    with serve(catalog) as (base, _):
        first = [get(f'{base}/collections/swap/items/2').json() for _ in range(2)]
        assert [f['properties']['name'] for f in first] == ['加西市避難所00001'] * 2
        make_points(tmp_path / 'next.gpkg', 40, 8, prefix='宝塚市避難所')
        os.replace(tmp_path / 'next.gpkg', path)
        again = get(f'{base}/collections/swap/items/2').json()
        assert again['properties']['name'] == '宝塚市避難所00001'


def open_files():
    out = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            out.add(os.readlink(f'/proc/self/fd/{fd}'))
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='needs /proc')
@pytest.mark.embedded_only(reason='open GeoPackage files: embedded mode only')
def test_unpublished_files_are_closed(data, tmp_path):
    schools = collection('schools', data['dir'] / 'schools.gpkg', '学校・避難所', N_SCHOOLS)
    old = tmp_path / 'old.gpkg'
    make_wards(old)
    catalog = FakeCatalog([schools, collection('old', old, '旧版', 3)])
    with serve(catalog) as (base, _):
        assert get(f'{base}/collections/old/items').status_code == 200
        assert any(str(old) in f for f in open_files())
        for _ in range(2):  # the previous generation is kept open once
            catalog.publish([schools])
            assert get(f'{base}/collections/schools/items').status_code == 200
        old.unlink()  # what the publisher does with superseded versions
        assert not any(str(old) in f for f in open_files())


def test_version_flips_under_load_never_500(data):
    d = data['dir']
    schools = collection('schools', d / 'schools.gpkg', '学校・避難所', N_SCHOOLS)
    wards = collection('kobe.wards', d / 'wards.gpkg', '神戸市の区', 3)
    catalog = FakeCatalog([schools, wards])
    statuses, errors, stop = [], [], threading.Event()
    allowed = {'/collections/schools/items?limit=50': {200},
               '/collections/kobe.wards/items': {200, 404}}
    with serve(catalog) as (base, _):
        def hammer(path):
            # Failures are recorded, not raised: a thread's exception would
            # not fail the test.
            with requests.Session() as s:
                while not stop.is_set():
                    r = s.get(base + path, timeout=30)
                    statuses.append((path, r.status_code))
                    if r.status_code == 200 and 'schools' in path \
                            and r.json()['numberReturned'] != 50:
                        errors.append(r.text[:200])

        threads = [threading.Thread(target=hammer, args=(p,)) for p in allowed]
        for t in threads:
            t.start()
        try:
            for i in range(60):
                catalog.publish([schools] if i % 2 == 0 else [schools, wards])
                stop.wait(0.005)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not errors
    assert len(statuses) >= 20
    # Both states of the flipping collection were actually served.
    assert {c for p, c in statuses if 'wards' in p} == {200, 404}
    bad = [(p, c) for p, c in statuses if c not in allowed[p]]
    assert not bad, bad[:5]


def test_html_in_japanese_and_catalogue_compiled(server):
    base, _ = server
    html = get(base, f='html').text
    assert 'dir="ltr"' in html and 'text_direction' not in html
    assert 'コレクション' in get(f'{base}/collections', f='html').text
    items = get(f'{base}/collections/schools/items', f='html').text
    assert 'ホーム' in items and '>Home<' not in items
    # The shipped .mo matches its .po (edit the .po, then recompile).
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po
    from ogcapi.blueprint import LOCALE_DIR
    folder = os.path.join(LOCALE_DIR, 'ja', 'LC_MESSAGES')
    with open(os.path.join(folder, 'messages.po'), 'rb') as po, \
            open(os.path.join(folder, 'messages.mo'), 'rb') as mo:
        want = {m.id: m.string for m in read_po(po) if m.id}
        have = {m.id: m.string for m in read_mo(mo) if m.id}
    assert want == have and want['Collections'] == 'コレクション'


def test_json_is_utf8_not_escaped(server):
    base, _ = server
    for path in ('/collections', '/collections/schools', '/collections/schools/items/1',
                 '/collections/schools/items?limit=3', ''):
        r = requests.get(base + path, timeout=30)
        assert r.status_code == 200
        assert b'\\u' not in r.content, path
        assert r.headers['Content-Type'].endswith('charset=utf-8'), path
    assert '学校・避難所'.encode() in requests.get(base + '/collections', timeout=30).content
