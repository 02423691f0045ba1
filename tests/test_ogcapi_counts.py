"""numberMatched that never costs more than the page (issue 17), end to end over HTTP.

Exact when an index answers it (the collection total; the R-tree for a bbox alone, edge
candidates tested exactly), computed within a time budget otherwise, else omitted while the
next links stay exact. The budget is a setting: a tiny one here makes every count that needs a
scan run out, whatever the machine's speed. Clients: requests, OWSLib, GDAL's OAPIF driver.
"""

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

import geopandas as gpd
import numpy as np
import pytest
import requests
import shapely
from flask import Flask
from werkzeug.serving import make_server

from ogcapi.api import OGCAPI
from ogcapi.blueprint import register_ogcapi
from tests import pg_features
from tests.test_ogcapi import CITIES, make_wards

N = 3000
BBOX = (134.6, 34.7, 134.9, 34.95)
TINY_MS = 1e-6  # runs out at SQLite's first look at the clock


def make_points(path):
    """Random points, plus points on and within a hair of the bbox's edges: the R-tree stores
    float32 boxes rounded outwards, so these are the R-tree candidates that are not matches."""
    rng = np.random.default_rng(17)
    x = list(rng.uniform(134.25, 135.47, N))
    y = list(rng.uniform(34.15, 35.68, N))
    minx, miny, maxx, maxy = BBOX
    mid_x, mid_y = (minx + maxx) / 2, (miny + maxy) / 2
    for eps in (-1e-9, 0.0, 1e-9):
        x += [minx + eps, maxx + eps, mid_x, mid_x]
        y += [mid_y, mid_y, miny + eps, maxy + eps]
    n = len(x)
    gdf = gpd.GeoDataFrame({
        'name': [f'避難所{i:05d}' for i in range(n)],
        'city': rng.choice(CITIES, n),
        'capacity': rng.integers(10, 1000, n),
    }, geometry=gpd.points_from_xy(x, y), crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')
    return gdf


def make_areas(path):
    """3,050 small polygons (3,000 random hexagons, 50 squares across the bbox's edges or a
    hair outside them) and 5 rows without a geometry: in PostgreSQL mode a version that gets
    a box grid (store.box_grid) and keeps its Feature texts in it."""
    rng = np.random.default_rng(14)
    n = 3000
    x, y = rng.uniform(134.25, 135.47, n), rng.uniform(34.15, 35.68, n)
    r = rng.uniform(0.002, 0.01, n)
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    geoms = [shapely.Polygon(np.c_[cx + rr * np.cos(angles), cy + rr * np.sin(angles)])
             for cx, cy, rr in zip(x, y, r)]
    minx, miny, maxx, maxy = BBOX
    side = 0.004
    for i in range(50):
        tx, ty = minx + (maxx - minx) * (i % 10) / 10, miny + (maxy - miny) * (i % 10) / 10
        o = -1e-9 if i % 5 == 0 else side / 2   # inside the bbox by: nothing (a hair out), half
        geoms.append([shapely.box(tx, miny - side + o, tx + side, miny + o),        # bottom
                      shapely.box(tx, maxy - o, tx + side, maxy - o + side),        # top
                      shapely.box(minx - side + o, ty, minx + o, ty + side),        # left
                      shapely.box(maxx - o, ty, maxx - o + side, ty + side)][i % 4])  # right
    geoms += [None] * 5
    gdf = gpd.GeoDataFrame({'name': [f'区域{i:05d}' for i in range(len(geoms))],
                            'capacity': rng.integers(10, 1000, len(geoms))},
                           geometry=geoms, crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')
    return gdf


@contextmanager
def serve(collections, count_budget_ms):
    holder = {}
    srv = make_server('127.0.0.1', 0, lambda env, sr: holder['app'](env, sr), threaded=True)
    base = f'http://127.0.0.1:{srv.server_port}/ogcapi'
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(base, pg_features.listing(lambda: collections), lambda: '1',
                                count_budget_ms=count_budget_ms,
                                **pg_features.ogcapi_options()))
    holder['app'] = app
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        srv.shutdown()
        thread.join(5)


@pytest.fixture(scope='module')
def grid_from_3000_points():
    """In PostgreSQL mode the points table (3,012 rows) gets the counting grid that large
    point versions have (store.point_grid), so the bbox tests below go through it."""
    from store import point_grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(point_grid, 'MIN_ROWS', 3000)
        yield


@pytest.fixture(scope='module')
def data(tmp_path_factory, grid_from_3000_points):
    d = tmp_path_factory.mktemp('counts')
    points, wards = make_points(d / 'points.gpkg'), make_wards(d / 'wards.gpkg')
    areas = make_areas(d / 'areas.gpkg')

    def coll(cid, name, n):
        return {'id': cid, 'title': cid, 'path': str(d / name), 'layer': 'features',
                'bbox': [134.25, 34.15, 135.47, 35.68], 'count': n}
    return {'points': points, 'wards': wards, 'areas': areas, 'dir': d,
            'collections': [coll('points', 'points.gpkg', len(points)),
                            coll('wards', 'wards.gpkg', len(wards)),
                            coll('areas', 'areas.gpkg', len(areas))]}


@pytest.fixture(scope='module')
def tiny(data):
    with serve(data['collections'], TINY_MS) as base:
        yield base


@pytest.fixture(scope='module')
def exact(data):
    with serve(data['collections'], None) as base:
        yield base


def get(url, **params):
    r = requests.get(url, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def full_count(path, where, params=()):
    """The reference: a plain COUNT(*) over the table with sqlite3."""
    with sqlite3.connect(path) as con:
        return con.execute(f'SELECT COUNT(*) FROM features WHERE {where}', params).fetchone()[0]


def next_href(doc):
    return next((link['href'] for link in doc['links'] if link['rel'] == 'next'), None)


def walk(url, **params):
    """Every page by following next links: (features, pages, numberMatched seen)."""
    features, pages, matched = [], 0, set()
    doc = get(url, **params)
    while True:
        pages += 1
        features += doc['features']
        matched.add(doc.get('numberMatched'))
        href = next_href(doc)
        if href is None:
            return features, pages, matched
        assert pages < 1000, 'next links never end'
        doc = requests.get(href, timeout=30).json()


def test_bbox_count_from_rtree_is_exact_even_without_budget(tiny, data):
    pts = data['points']
    minx, miny, maxx, maxy = BBOX
    inside = pts[(pts.geometry.x >= minx) & (pts.geometry.x <= maxx)
                 & (pts.geometry.y >= miny) & (pts.geometry.y <= maxy)]
    # 4 points per edge offset: those 1e-9 outside are R-tree candidates but no match.
    on_edges = inside[inside.name >= f'避難所{N:05d}']
    assert len(on_edges) == 8
    reference = len(inside)  # a full scan of every point
    doc = get(f'{tiny}/collections/points/items', bbox=','.join(map(str, BBOX)), limit=1000)
    assert doc['numberMatched'] == reference == doc['numberReturned']
    assert {f['properties']['name'] for f in doc['features']} == set(inside.name)
    ids = [f['id'] for f in doc['features']]
    assert ids == sorted(ids)  # rowid order, as without a bbox
    hits = get(f'{tiny}/collections/points/items', bbox=','.join(map(str, BBOX)),
               resulttype='hits')
    assert hits['numberMatched'] == len(inside)
    if pg_features.active():   # counted and paged by the grid
        from sqlalchemy import text
        from store import point_grid
        table = pg_features.load(str(data['dir'] / 'points.gpkg'))
        with pg_features.engine().connect() as conn:
            assert conn.execute(text('SELECT to_regclass(:g) IS NOT NULL'),
                                {'g': point_grid.companions(table)[1]}).scalar()


def test_bbox_pages_follow_rowid_order(tiny, data):
    pts = data['points']
    minx, miny, maxx, maxy = BBOX
    inside = pts.cx[minx:maxx, miny:maxy]
    features, pages, matched = walk(f'{tiny}/collections/points/items',
                                    bbox=','.join(map(str, BBOX)), limit=7)
    assert matched == {len(inside)}
    assert pages == -(-len(inside) // 7)
    assert [f['id'] for f in features] == sorted(int(i) + 1 for i in inside.index)


def test_polygons_bbox_count_exact_at_edges(tiny, data):
    # The triangle's R-tree box meets this bbox, the triangle does not: exact test at the edge.
    bbox = (134.97, 34.67, 134.99, 34.69)
    wards = data['wards']
    expected = set(wards[wards.intersects(shapely.box(*bbox))].name)
    assert expected == {'須磨区', '長田区'}
    doc = get(f'{tiny}/collections/wards/items', bbox=','.join(map(str, bbox)))
    assert doc['numberMatched'] == 2 == doc['numberReturned']
    assert {f['properties']['name'] for f in doc['features']} == expected


def test_large_polygon_bbox_pages_and_counts_for_real_clients(tiny, data):
    """3,055 polygons by bbox, over HTTP: requests following next links page by page, and
    GDAL's OAPIF driver reading the bbox, get exactly what intersects it, with their
    geometries and properties; numberMatched exact on every page. In PostgreSQL mode through
    the box grid and the texts kept in it."""
    areas = data['areas']
    hit = areas[areas.geometry.notna() & areas.intersects(shapely.box(*BBOX))]
    assert len(hit) > 100 and hit.name.str[2:].astype(int).max() >= 3000   # edge squares too
    bbox = ','.join(map(str, BBOX))
    features, pages, matched = walk(f'{tiny}/collections/areas/items', bbox=bbox, limit=23)
    assert matched == {len(hit)} and pages == -(-len(hit) // 23)
    assert [f['id'] for f in features] == [int(i) + 1 for i in hit.index]
    for f in features:
        src = areas.loc[f['id'] - 1]
        assert f['properties'] == {'name': src['name'], 'capacity': int(src['capacity'])}
        assert shapely.geometry.shape(f['geometry']).equals_exact(src.geometry, 1e-12)
    assert get(f'{tiny}/collections/areas/items/3053')['geometry'] is None   # no geometry
    r = subprocess.run(
        [sys.executable, '-c', GDAL_BBOX_READ, f'OAPIF:{tiny}/collections/areas', bbox],
        capture_output=True, timeout=180, env=dict(os.environ, GDAL_HTTP_TIMEOUT='60'))
    assert r.returncode == 0, r.stderr.decode(errors='replace')[-2000:]
    assert sorted(json.loads(r.stdout)) == sorted(hit.name)
    if pg_features.active():
        from sqlalchemy import text
        from store import point_grid
        table = pg_features.load(str(data['dir'] / 'areas.gpkg'))
        with pg_features.engine().connect() as conn:
            head = conn.execute(text(f'SELECT grid FROM "{point_grid.companions(table)[1]}" '
                                     'WHERE cy = -1')).scalar()
        assert len(head) == 9   # a box grid


GDAL_BBOX_READ = """
import json, sys, pyogrio
df = pyogrio.read_dataframe(sys.argv[1], bbox=tuple(map(float, sys.argv[2].split(','))))
sys.stdout.write(json.dumps(list(df['name'])))
"""


def test_total_without_filter_needs_no_budget(tiny, data):
    doc = get(f'{tiny}/collections/points/items', limit=5)
    assert doc['numberMatched'] == len(data['points'])
    assert next_href(doc) is not None


@pytest.mark.parametrize('params, where, args', [
    ({'city': '姫路市'}, 'city = ?', ('姫路市',)),
    ({'filter': 'capacity > 500'}, 'capacity > 500', ()),
    ({'filter': "capacity > 500 AND city = '神戸市'"}, "capacity > 500 AND city = '神戸市'", ()),
])
def test_count_omitted_when_budget_runs_out_next_links_still_exact(tiny, exact, data,
                                                                   params, where, args):
    path = data['dir'] / 'points.gpkg'
    n = full_count(path, where, args)
    assert n > 100
    # With no budget limit the count is exact ...
    doc = get(f'{exact}/collections/points/items', limit=10, **params)
    assert doc['numberMatched'] == n
    # ... with a tiny one it is left out, and next links carry the client through every row;
    # the last page knows it without counting (what precedes it and what it holds).
    doc = get(f'{tiny}/collections/points/items', limit=10, **params)
    assert 'numberMatched' not in doc and doc['numberReturned'] == 10
    # A page size that divides the total exactly: the last full page has no next link.
    limit = next((k for k in range(50, 500) if n % k == 0), 97)
    features, pages, matched = walk(f'{tiny}/collections/points/items', limit=limit, **params)
    assert matched == {None, n}
    assert pages == -(-n // limit)
    with sqlite3.connect(path) as con:
        fids = [r[0] for r in con.execute(f'SELECT fid FROM features WHERE {where} ORDER BY fid',
                                          args)]
    assert [f['id'] for f in features] == fids


@pytest.mark.parametrize('offset', [0, 40])
def test_last_page_knows_its_count_without_counting(tiny, data, offset):
    n = full_count(data['dir'] / 'points.gpkg', 'city = ?', ('加西市',))
    assert 40 < n < 1000
    doc = get(f'{tiny}/collections/points/items', city='加西市', offset=offset, limit=1000)
    assert doc['numberMatched'] == n and doc['numberReturned'] == n - offset
    assert next_href(doc) is None
    # Past the end nothing says how many precede: left out, as the budget ran out.
    doc = get(f'{tiny}/collections/points/items', city='加西市', offset=n + offset, limit=10)
    assert 'numberMatched' not in doc and doc['features'] == []


@pytest.mark.embedded_only(reason='the GeoPackage reader\'s count, on its own')
def test_count_budget_no_longer_than_the_page(data):
    """A count goes on no longer than its page took (COUNT_FLOOR_MS at least), even
    under a generous budget: a 9M-row count is given up beside a page of 0 ms, made under none."""
    from ogcapi.gpkg_read import GpkgFile
    path = str(data['dir'] / 'points.gpkg')
    f = GpkgFile(path, None, count_budget_ms=60_000)
    sql = 'SELECT COUNT(*) FROM features a, features b WHERE a.capacity + b.capacity > ?'
    with f.connection() as con:
        assert f.count(con, sql, [-1], page_ms=0.0) is None
    exact = GpkgFile(path, None, count_budget_ms=None)
    with exact.connection() as con:
        assert exact.count(con, sql, [-1], page_ms=0.0) == len(data['points']) ** 2


def test_hits_without_count_has_no_next_link(tiny):
    doc = get(f'{tiny}/collections/points/items', resulttype='hits', filter='capacity > 500')
    assert 'numberMatched' not in doc and next_href(doc) is None


def test_openapi_says_what_clients_can_expect(tiny):
    oas = get(f'{tiny}/openapi')
    desc = oas['paths']['/collections/points/items']['get']['description']
    assert 'numberMatched' in desc and 'next' in desc and 'bbox' in desc


def test_owslib_pages_through_without_counts(tiny, data):
    from owslib.ogcapi.features import Features
    api = Features(tiny)
    n = full_count(data['dir'] / 'points.gpkg', 'city = ?', ('加西市',))
    seen, offset = [], 0
    while True:
        page = api.collection_items('points', limit=250, offset=offset, city='加西市')
        seen += [f['id'] for f in page['features']]
        href = next_href(page)
        if href is None:
            assert page['numberMatched'] == n   # the last page: no count needed
            break
        assert 'numberMatched' not in page
        offset = int(parse_qs(urlparse(href).query)['offset'][0])
    assert len(seen) == len(set(seen)) == n


GDAL_READ = """
import sys, pyogrio
df = pyogrio.read_dataframe(sys.argv[1], where=sys.argv[2] or None)
sys.stdout.write(df.to_json(ensure_ascii=False))
"""


@pytest.mark.parametrize('where', ['', "city = '養父市'"])
def test_gdal_reads_everything_with_a_tiny_budget(tiny, data, where):
    r = subprocess.run(
        [sys.executable, '-c', GDAL_READ, f'OAPIF:{tiny}/collections/points', where],
        capture_output=True, timeout=180, env=dict(os.environ, GDAL_HTTP_TIMEOUT='60'))
    assert r.returncode == 0, r.stderr.decode(errors='replace')[-2000:]
    features = json.loads(r.stdout.decode('utf-8'))['features']
    pts = data['points']
    expected = pts if not where else pts[pts.city == '養父市']
    assert sorted(f['properties']['name'] for f in features) == sorted(expected.name)


def test_total_from_the_count_the_geopackage_keeps_and_its_fallback(tmp_path, monkeypatch):
    """A layer's total comes from the feature_count GDAL keeps in gpkg_ogr_contents while the
    triggers that keep it on every insert and delete are in the file (count(*) read every
    row of a 5M-point file in ~0.5 s per worker); rows deleted by another SQLite writer are
    counted by those triggers, and without them the rows themselves are counted."""
    from ogcapi.provider import GPKGProvider
    from ogcapi.gpkg_read import FileRegistry
    path = tmp_path / 'kept.gpkg'
    gpd.GeoDataFrame({'name': [f'地点{i}' for i in range(12)]},
                     geometry=gpd.points_from_xy(np.linspace(135, 135.1, 12), [34.8] * 12),
                     crs=4326).to_file(path, layer='features', driver='GPKG')

    from ogcapi import gpkg_read
    statements, connect = [], sqlite3.connect

    def traced(*args, **kwargs):   # what the provider asks SQLite
        con = connect(*args, **kwargs)
        con.set_trace_callback(statements.append)
        return con
    monkeypatch.setattr(gpkg_read.sqlite3, 'connect', traced)

    def counted():
        return any('count(*)' in s.lower() for s in statements)

    def total():   # a provider over the file as it is now (a new registry: no kept state)
        statements.clear()
        p = GPKGProvider({'name': 'GPKG', 'type': 'feature', 'data': str(path),
                          'layer': 'features', 'renkei_files': FileRegistry()})
        doc = p.query(limit=100, offset=0)
        assert doc['numberReturned'] == len(doc['features'])
        return doc['numberMatched'], [f['id'] for f in doc['features']], p
    assert total()[:2] == (12, list(range(1, 13))) and not counted()
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT feature_count FROM gpkg_ogr_contents").fetchone() == (12,)
        con.execute("DELETE FROM features WHERE fid IN (3, 12)")   # the triggers count it
    n, ids, p = total()
    assert (n, ids) == (10, [1, 2, *range(4, 12)]) and not counted()
    # Not dense any more: a deep page by offset is not a key range.
    assert [f['id'] for f in p.query(limit=2, offset=2)['features']] == [4, 5]
    with sqlite3.connect(path) as con:
        con.execute("DROP TRIGGER trigger_delete_feature_count_features")
        con.execute("DELETE FROM features WHERE fid = 1")   # not kept now: counted instead
        assert con.execute("SELECT feature_count FROM gpkg_ogr_contents").fetchone() == (10,)
    assert total()[:2] == (9, [2, *range(4, 12)]) and counted()
