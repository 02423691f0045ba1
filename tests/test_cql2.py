"""CQL2 filtering (OGC API Features Part 3) over HTTP, checked against GeoPandas on the same data.

Every filter is run by the server in SQLite (ogcapi.cql) and, independently, as a pandas/shapely
expression on the GeoDataFrame the GeoPackage was written from; the id sets must agree.
"""

import json

import geopandas as gpd
import numpy as np
import pytest
import requests
import shapely
from shapely.geometry import Polygon, box

from tests.test_ogcapi import FakeCatalog, collection, make_wards, serve

N = 3000
CITIES = ['姫路市', '加古川市', '加西市', '養父市', '神戸市']
KINDS = ['小学校', '中学校', '公民館', '体育館']


def make_facilities(path):
    rng = np.random.default_rng(11)
    kind = rng.choice(KINDS, N)
    city = rng.choice(CITIES, N)
    note = np.where(rng.random(N) < 0.2, None, '備考あり').astype(object)
    gdf = gpd.GeoDataFrame({
        'name': [f'{c}立第{i}{k}' for i, (c, k) in enumerate(zip(city, kind))],
        'city': city,
        'capacity': rng.integers(0, 1000, N),
        'area': rng.uniform(10, 500, N).round(2),
        'barrier_free': rng.integers(0, 2, N).astype(bool),
        'opened': [f'{y}-04-01' for y in rng.integers(1960, 2024, N)],
        'note': note,
    }, geometry=gpd.points_from_xy(rng.uniform(134.25, 135.47, N),
                                   rng.uniform(34.15, 35.68, N)), crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')
    gdf.index = np.arange(1, N + 1)  # fid
    return gdf


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('cql')
    fac = make_facilities(d / 'fac.gpkg')
    wards = make_wards(d / 'wards.gpkg')
    wards.index = np.arange(1, len(wards) + 1)
    return {'dir': d, 'fac': fac, 'wards': wards}


@pytest.fixture(scope='module')
def base(data):
    fac = collection('fac', data['dir'] / 'fac.gpkg', '公共施設', N)
    fac['fields'] = {'capacity': {'type': 'integer', 'title': '収容人数'},
                     'name': {'type': 'string', 'title': '施設名'}}
    wards = collection('wards', data['dir'] / 'wards.gpkg', '神戸市の区', 3)
    with serve(FakeCatalog([fac, wards])) as (url, _):
        yield url


def ids(base, cid='fac', **params):
    params.setdefault('limit', 1000)
    out, url = [], f'{base}/collections/{cid}/items'
    matched = None
    while url:  # follow next links: the filter must survive paging
        r = requests.get(url, params=params, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        matched = doc['numberMatched'] if matched is None else matched
        out += [f['id'] for f in doc['features']]
        url = next((link['href'] for link in doc['links'] if link['rel'] == 'next'), None)
        params = None
    assert matched == len(out)
    return out


POLY = Polygon([(134.5, 34.5), (135.2, 34.6), (134.9, 35.3), (134.5, 34.5)])
CASES = [
    ("capacity > 500 AND name LIKE '%小学校%'",
     lambda g: (g.capacity > 500) & g.name.str.contains('小学校')),
    ("city = '姫路市'", lambda g: g.city == '姫路市'),
    ("capacity <> 10 AND capacity <= 20", lambda g: (g.capacity != 10) & (g.capacity <= 20)),
    ("area >= 400.5 OR capacity < 3", lambda g: (g['area'] >= 400.5) | (g.capacity < 3)),
    ("NOT (city IN ('姫路市', '神戸市'))", lambda g: ~g.city.isin(['姫路市', '神戸市'])),
    ("city NOT IN ('加西市')", lambda g: g.city != '加西市'),
    ("capacity BETWEEN 100 AND 120", lambda g: g.capacity.between(100, 120)),
    ("note IS NULL", lambda g: g.note.isna()),
    ("note IS NOT NULL AND barrier_free = true", lambda g: g.note.notna() & g.barrier_free),
    ("name LIKE '姫路市立第1_小学校'",
     lambda g: g.name.str.fullmatch(r'姫路市立第1.小学校')),
    ("name NOT LIKE '%館'", lambda g: ~g.name.str.endswith('館')),
    ("opened >= DATE('2000-01-01')", lambda g: g.opened >= '2000-01-01'),
    ("S_INTERSECTS(geometry, BBOX(134.8, 34.6, 135.0, 34.8))",
     lambda g: g.intersects(box(134.8, 34.6, 135.0, 34.8))),
    (f"S_INTERSECTS(geometry, {POLY.wkt}) AND capacity > 900",
     lambda g: g.intersects(POLY) & (g.capacity > 900)),
    (f"S_INTERSECTS(geometry, {POLY.wkt}) OR city = '養父市'",
     lambda g: g.intersects(POLY) | (g.city == '養父市')),
]


@pytest.mark.parametrize('text,expected', CASES, ids=[c[0][:40] for c in CASES])
def test_cql2_text_matches_geopandas(base, data, text, expected):
    g = data['fac']
    want = sorted(g.index[expected(g)].tolist())
    assert want, 'a filter that matches nothing proves little'
    assert ids(base, filter=text, **{'filter-lang': 'cql2-text'}) == want


def test_cql2_json_and_default_language(base, data):
    g = data['fac']
    doc = {'op': 'and', 'args': [
        {'op': '>', 'args': [{'property': 'capacity'}, 500]},
        {'op': 's_intersects', 'args': [{'property': 'geometry'},
                                        {'bbox': [134.8, 34.6, 135.0, 34.8]}]}]}
    want = g.index[(g.capacity > 500) & g.intersects(box(134.8, 34.6, 135.0, 34.8))].tolist()
    assert ids(base, filter=json.dumps(doc), **{'filter-lang': 'cql2-json'}) == sorted(want)
    # No filter-lang: CQL2 text, the Part 3 default.
    assert ids(base, filter='capacity > 990') == sorted(g.index[g.capacity > 990].tolist())


def test_spatial_filter_on_polygons_uses_geometry(base, data):
    # The triangle's envelope covers the bbox, its area does not (R-tree alone would say yes).
    got = ids(base, 'wards', filter='S_INTERSECTS(geometry, BBOX(134.97,34.67,134.99,34.69))')
    assert sorted(data['wards'].name[got]) == ['長田区', '須磨区']
    tri = 'POLYGON((134.96 34.66, 134.99 34.66, 134.99 34.69, 134.96 34.66))'
    got = ids(base, 'wards', filter=f'S_INTERSECTS(geometry, {tri})')
    w = data['wards']
    assert got == sorted(w.index[w.intersects(shapely.from_wkt(tri))].tolist())


def test_filter_crs_lat_lon(base, data):
    g = data['fac']
    # EPSG:4326 literals are latitude first.
    latlon = 'POLYGON((34.5 134.5, 34.6 135.2, 35.3 134.9, 34.5 134.5))'
    got = ids(base, filter=f'S_INTERSECTS(geometry, {latlon})',
              **{'filter-crs': 'http://www.opengis.net/def/crs/EPSG/0/4326'})
    assert got == sorted(g.index[g.intersects(POLY)].tolist())


def test_filter_with_bbox_sort_and_properties(base, data):
    g = data['fac']
    bb = (134.6, 34.4, 135.3, 35.0)
    r = requests.get(f'{base}/collections/fac/items', timeout=30, params={
        'filter': "city = '神戸市'", 'bbox': ','.join(map(str, bb)), 'sortby': '-capacity',
        'properties': 'name,capacity', 'limit': 1000})
    doc = r.json()
    sel = g[(g.city == '神戸市') & g.intersects(box(*bb))]
    assert doc['numberMatched'] == len(sel)
    caps = [f['properties']['capacity'] for f in doc['features']]
    assert caps == sorted(sel.capacity, reverse=True)
    assert all(set(f['properties']) == {'name', 'capacity'} for f in doc['features'])


def test_utf8_json_and_html(base):
    r = requests.get(f'{base}/collections/fac/items', timeout=30,
                     params={'filter': "name LIKE '%小学校%'", 'limit': 2})
    assert '小学校'.encode() in r.content and b'\\u' not in r.content
    assert r.headers['Content-Type'].endswith('charset=utf-8')
    q = requests.get(f'{base}/collections/fac/queryables', timeout=30)
    assert '収容人数'.encode() in q.content and b'\\u' not in q.content
    html = requests.get(f'{base}/collections/fac/items', timeout=30,
                        params={'filter': "name LIKE '%小学校%'", 'f': 'html'})
    assert html.status_code == 200 and '小学校' in html.text and '公民館' not in html.text


def test_queryables_types_and_japanese_titles(base):
    q = requests.get(f'{base}/collections/fac/queryables', timeout=30).json()['properties']
    assert q['capacity'] == {'type': 'integer', 'title': '収容人数'} or (
        q['capacity']['type'] == 'integer' and q['capacity']['title'] == '収容人数')
    assert q['name']['title'] == '施設名'
    assert q['area']['type'] == 'number' and q['barrier_free']['type'] == 'boolean'


@pytest.mark.parametrize('params', [
    {'filter': "nosuch = 1"},
    {'filter': "capacity = 'x'"},
    {'filter': "name > 3"},
    {'filter': "barrier_free = 1"},
    {'filter': "CASEI(name) = 'a'"},
    {'filter': "name ILIKE 'a%'"},
    {'filter': "S_CONTAINS(geometry, POINT(135 35))"},
    {'filter': "S_INTERSECTS(capacity, POINT(135 35))"},
    {'filter': 'capacity + 1 > 3'},
    {'filter': 'capacity > 3', 'filter-lang': 'ecql'},
    {'filter': '{"op": "nope"}', 'filter-lang': 'cql2-json'},
    {'filter': 'capacity > 3', 'filter-crs': 'http://www.opengis.net/def/crs/EPSG/0/32654'},
    {'filter-crs': 'http://www.opengis.net/def/crs/EPSG/0/4326'},
])
def test_unsupported_filters_are_400(base, params):
    r = requests.get(f'{base}/collections/fac/items', params=params, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()['code'] in ('InvalidParameterValue', 'InvalidQuery')
