"""ogcapi.feature_text writes the same bytes as json.dumps of the feature dicts (the items view's
encoding), whatever the values: the fast column path and its fallbacks."""
import datetime
import itertools
import json
import math
import sqlite3
import threading

import pytest

from pygeoapi.util import json_serial

from ogcapi import feature_text


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(',', ':'), default=json_serial)


COLUMNS = {
    'name': ['神戸市立第1小学校', None, 'quote " back \\ \n\t\x01 \u2028 %s %%', ''],
    'count': [0, -5, 2 ** 63 - 1, None],
    'area': [1.5, 0.30000000000000004, 1e16, -0.0],
    'mixed': [1, 2.5, 'x', None],
    'odd': [math.nan, math.inf, -math.inf, 1.0],
    'raw': [b'utf-8 \xe3\x81\x82', b'\xff\xfe', None, datetime.date(2024, 4, 1)],
    'flag': [1, 0, None, 7],
    '100%"': ['a', 'b', 'c', 'd'],
}


def test_features_are_what_json_dumps_writes():
    names = list(COLUMNS)
    fids = [1, 2, 3, 2 ** 40]
    geoms = [{'type': 'Point', 'coordinates': [135.1, 34.7]}, None,
             {'type': 'Polygon', 'coordinates': (((0.0, 0.0), (1.0, 0.0), (0.0, 1.0),
                                                  (0.0, 0.0)),)},
             {'type': 'Point', 'coordinates': [math.nan, 1.0]}]
    texts = feature_text.features(
        feature_text.column(fids), feature_text.geometries(geoms),
        [feature_text.column(COLUMNS[n], boolean=n == 'flag') for n in names], names)
    for i, text in enumerate(texts):
        props = {n: COLUMNS[n][i] for n in names}
        props['flag'] = None if props['flag'] is None else bool(props['flag'])
        want = {'type': 'Feature', 'id': fids[i], 'geometry': geoms[i], 'properties': props}
        assert text == dumps(want)


def test_points_fall_back_when_not_finite():
    xs, ys = [135.0, 0.1 + 0.2], [34.5, -0.0]
    assert feature_text.points(xs, ys) == [
        dumps({'type': 'Point', 'coordinates': [x, y]}) for x, y in zip(xs, ys)]
    assert feature_text.points([math.nan], [1.0]) is None


def test_no_rows_no_properties():
    assert feature_text.features([], [], [], []) == []
    assert feature_text.features(['7'], ['null'], [], []) == [
        dumps({'type': 'Feature', 'id': 7, 'geometry': None, 'properties': {}})]


def test_shapes_are_what_json_dumps_writes_of_geo_interface():
    import shapely
    wkts = ['POINT (135.1 34.7)', 'POINT Z (1 2 3)', 'POINT EMPTY',
            'POLYGON ((0 0, 1 0, 1 1, 0 0), (0.1 0.1, 0.2 0.1, 0.2 0.2, 0.1 0.1))',
            'POLYGON ((134.90000000000001 34.6, 135 34.6, 134.9 34.7, 134.90000000000001 34.6))',
            'MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5), (5.1 5.1, 5.2 5.1, '
            '5.2 5.2, 5.1 5.1)))',
            'POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))', 'POLYGON EMPTY',
            'LINESTRING (0 0, 1 1)', 'MULTIPOINT ((0 0), (1 1))',
            'GEOMETRYCOLLECTION (POINT (1 2))']
    geoms = list(shapely.from_wkt(wkts)) + [None, shapely.Point(1.0, math.nan),
                                            shapely.Polygon([(0, 0), (1, math.inf), (1, 1)])]
    import numpy as np
    arr = np.array(geoms, dtype=object)
    want = [dumps(None if g is None or g.is_empty else g.__geo_interface__) for g in geoms]
    assert feature_text.shapes(arr) == want


# -- coordinates written by Arrow: the digits and forms of repr ----------------------------------

EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 100.0, 135.0, 0.1 + 0.2, 1 / 3, 1e-4, 9.999999999999999e-05,
               5e-5, 1.5e-7, 5e-324, 2.2250738585072014e-308, 1e15, 1.5e15,
               123456789012345.6, 9999999999999998.0, 1e16, 1.7976931348623157e308,
               9007199254740993.0, 2.0 ** 60, 134.90000000000001, 34.65, -12345.678,
               0.00012345, 0.00099999, 1234567890123456.5, 4503599627370495.5, 1e-5, 1e-7]


def test_float_texts_are_repr():
    import numpy as np
    rng = np.random.default_rng(6)
    values = np.concatenate([
        EDGE_FLOATS, rng.uniform(134, 136, 20_000), rng.uniform(-1e6, 1e6, 20_000),
        np.round(rng.uniform(-200, 200, 20_000), 3),
        rng.integers(0, 2 ** 63, 40_000, dtype=np.uint64).view(np.float64)])
    values = values[np.isfinite(values)]
    assert feature_text.arrow_for(len(values))   # Arrow agrees with repr here: it is used
    assert feature_text.float_texts(values).to_pylist() == list(map(repr, values.tolist()))


def test_arrow_and_python_shapes_agree_with_json_dumps():
    import numpy as np
    import shapely
    rng = np.random.default_rng(7)
    odd = itertools.cycle(EDGE_FLOATS)

    def ring(n, cx, cy):
        pts = [(cx + rng.uniform(-1, 1), cy + rng.uniform(-1, 1)) for _ in range(n)]
        pts[1] = (next(odd), next(odd))   # integral, tiny and huge coordinates among them
        return pts + [pts[0]]
    polys = [shapely.Polygon(ring(rng.integers(3, 9), 135, 35)) for _ in range(200)]
    holed = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)],
                            [[(1, 1), (2, 1), (2, 2), (1, 1)], [(5, 5), (6.5, 5), (6, 6), (5, 5)]])
    multis = [shapely.MultiPolygon([polys[i], holed]) for i in range(5)]
    points = [shapely.Point(next(odd), next(odd)) for _ in range(600)]
    geoms = np.array([*polys, holed, *multis, *points], dtype=object)
    want = [dumps(g.__geo_interface__) for g in geoms]
    assert feature_text.shapes(geoms) == want
    multis *= 100   # Arrow is used from ARROW_MIN_FLOATS coordinates on
    for kind, group in ((3, [*polys, holed]), (6, multis), (0, points)):
        _, coords, offsets = shapely.to_ragged_array(group)
        assert coords.size >= feature_text.ARROW_MIN_FLOATS
        expected = [dumps(g.__geo_interface__) for g in group]
        assert feature_text._arrow_shapes(kind, coords, offsets).to_pylist() == expected
        assert feature_text._python_shapes(kind, coords, offsets) == expected


def test_provider_texts_are_the_dicts_it_would_serve(tmp_path):
    """The items view's two encodings of one page: Feature texts (raw_json) and json.dumps of
    the feature dicts, for points and polygons, in CRS84 and transformed, and over a bbox."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from pygeoapi.util import CrsTransformSpec
    from ogcapi.provider import GPKGProvider
    rng = np.random.default_rng(8)
    n = 700   # a whole page of points takes the Arrow path, pages of 50 or 100 repr
    x, y = rng.uniform(134.25, 135.47, n), rng.uniform(34.15, 35.68, n)
    x[:3], y[:3] = [135.0, 134.5, 135.25], [35.0, 34.75, 35.5]   # whole and short coordinates
    attrs = {'name': [f'避難所{i}' for i in range(n)], 'capacity': rng.integers(0, 900, n),
             'area': rng.uniform(0, 100, n), 'ok': rng.integers(0, 2, n).astype(bool)}
    layers = {
        'points': gpd.points_from_xy(x, y),
        'polygons': [shapely.Point(a, b).buffer(0.01, 2) if i % 7 else
                     shapely.MultiPolygon([shapely.Point(a, b).buffer(0.01, 1),
                                           shapely.box(a + .1, b + .1, a + .12, b + .11)])
                     for i, (a, b) in enumerate(zip(x, y))]}
    spec = CrsTransformSpec('http://www.opengis.net/def/crs/OGC/1.3/CRS84', '',
                            'http://www.opengis.net/def/crs/EPSG/0/6673', '')
    for name, geometry in layers.items():
        path = tmp_path / f'{name}.gpkg'
        gpd.GeoDataFrame(attrs, geometry=geometry, crs=4326).to_file(path, layer='features',
                                                                     driver='GPKG')
        p = GPKGProvider({'name': 'x', 'type': 'feature', 'data': str(path),
                          'layer': 'features', 'id_field': 'fid'})
        for kwargs in ({'limit': 1000}, {'limit': 50, 'offset': 20},
                       {'limit': 1000, 'bbox': [134.6, 34.6, 135.0, 35.0]},
                       {'limit': 100, 'crs_transform_spec': spec}):
            texts = p.query(raw_json=True, **kwargs)['features']
            dicts = p.query(**kwargs)['features']
            assert len(texts) == len(dicts) > 10
            # A page Arrow writes comes as one UTF-8 text (FeatureBytes), others as a list.
            body = (bytes(texts.body).decode() if isinstance(texts, feature_text.FeatureBytes)
                    else ','.join(texts))
            assert body == ','.join(dumps(d) for d in dicts), (name, kwargs)


@pytest.fixture(scope='module')
def odd_pages(tmp_path_factory):
    """A GeoPackage of 1,500 small polygons whose properties take every path of the page
    writer (strings to escape, NULLs, a BLOB among texts, integral floats, 0/1/NULL booleans),
    served by our items view over HTTP (the GeoPackage provider in both test modes)."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from flask import Flask
    from werkzeug.serving import make_server
    from ogcapi.api import OGCAPI
    from ogcapi.blueprint import register_ogcapi
    from ogcapi.gpkg_read import wkb
    rng = np.random.default_rng(21)
    n = 1500
    x, y = rng.uniform(134.5, 135.0, n), rng.uniform(34.6, 35.0, n)
    polys = [shapely.Polygon([(a, b), (a + 0.001, b), (a + 0.001, b + 0.002), (a, b)])
             for a, b in zip(x, y)]
    polys[5] = shapely.box(134.60, 34.70, 134.602, 34.702).difference(   # a hole
        shapely.box(134.6005, 34.7005, 134.601, 34.701))
    path = tmp_path_factory.mktemp('odd') / 'odd.gpkg'
    gpd.GeoDataFrame({
        'name': [f'避難所{i} "quoted" \\ tab\t' if i % 97 == 0 else f'避難所{i}'
                 for i in range(n)],
        'note': [None if i % 3 else f'メモ{i}' for i in range(n)],
        'capacity': rng.integers(0, 900, n),
        'area': np.round(rng.uniform(0, 100, n), 1),
        'ok': rng.integers(0, 2, n).astype(bool),
    }, geometry=polys, crs=4326).to_file(path, layer='features', driver='GPKG')
    with sqlite3.connect(path) as con:   # what a writer other than ours may leave
        # The GeoPackage's R-tree triggers call SpatiaLite's functions (the geometries stay).
        def bound(i):
            return lambda g: shapely.from_wkb(wkb(g)).bounds[i]
        con.create_function('ST_IsEmpty', 1, lambda g: int(wkb(g) is None))
        for i, f in enumerate(('ST_MinX', 'ST_MinY', 'ST_MaxX', 'ST_MaxY')):
            con.create_function(f, 1, bound(i))
        con.execute("UPDATE features SET note = X'e381820a' WHERE fid = 7")
        con.execute('UPDATE features SET capacity = NULL, area = 3.0, ok = NULL WHERE fid = 8')
        con.execute("UPDATE features SET area = NULL WHERE fid = 9")
    holder = {}
    srv = make_server('127.0.0.1', 0, lambda env, sr: holder['app'](env, sr), threaded=True)
    base = f'http://127.0.0.1:{srv.server_port}/ogcapi'
    app = Flask(__name__)
    coll = {'id': 'odd', 'title': 'odd', 'path': str(path), 'layer': 'features',
            'bbox': [134.25, 34.15, 135.47, 35.68], 'count': n}
    register_ogcapi(app, OGCAPI(base, lambda: [coll], lambda: '1'))
    holder['app'] = app
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield base, path
    srv.shutdown()
    thread.join(5)


@pytest.mark.parametrize('query', [
    {'limit': 1000}, {'limit': 1000, 'offset': 700},
    {'limit': 1000, 'bbox': '134.55,34.65,134.85,34.95'},
    {'limit': 600, 'bbox': '134.5,34.6,135.0,35.0', 'properties': 'name,ok'},
    {'limit': 1000, 'bbox': '134.59,34.69,134.8,34.9', 'skipGeometry': 'true'}])
def test_http_pages_are_the_dicts_json_dumps_would_write(odd_pages, query):
    """Pages Arrow writes (FeatureBytes), through the items view and HTTP: the features are
    byte for byte json.dumps of the feature dicts (the provider's other encoding), and they
    are the rows of the file that meet the bbox, in fid order."""
    import requests
    import shapely
    from ogcapi.provider import GPKGProvider
    base, path = odd_pages
    r = requests.get(f'{base}/collections/odd/items', params=query, timeout=60)
    assert r.status_code == 200, r.text
    body = r.content
    start, end = body.index(b'"features":[') + len(b'"features":['), body.index(
        b'],"numberReturned"')
    kwargs = {'limit': query['limit'], 'offset': query.get('offset', 0)}
    if 'bbox' in query:
        kwargs['bbox'] = [float(v) for v in query['bbox'].split(',')]
    if 'properties' in query:
        kwargs['select_properties'] = query['properties'].split(',')
    kwargs['skip_geometry'] = 'skipGeometry' in query
    p = GPKGProvider({'name': 'x', 'type': 'feature', 'data': str(path), 'layer': 'features'})
    dicts = p.query(**kwargs)['features']
    assert body[start:end].decode() == ','.join(dumps(d) for d in dicts)
    doc = r.json()
    with sqlite3.connect(path) as con:
        rows = con.execute('SELECT fid, geom FROM features ORDER BY fid').fetchall()
    if 'bbox' in query:
        box = shapely.box(*kwargs['bbox'])
        rows = [r for r in rows if shapely.from_wkb(r[1][8 + 32:]).intersects(box)]
        assert doc['numberMatched'] == len(rows)
    want = [r[0] for r in rows][kwargs['offset']:kwargs['offset'] + kwargs['limit']]
    assert [f['id'] for f in doc['features']] == want and len(want) > 100


def test_polygon_coordinates_are_shapelys_or_none():
    """Polygons read from their GeoPackage blobs with numpy: shapely's ragged arrays for
    single-ring 2D little-endian polygons in any envelope layout; None (shapely decodes) for
    anything else, each case alone in a page of good polygons."""
    import struct
    import numpy as np
    import shapely
    from ogcapi.gpkg_read import polygon_coordinates

    def blob(g, envelope=1, order='little'):
        env = {0: b'', 1: struct.pack('<4d', *g.bounds),
               2: struct.pack('<6d', *g.bounds, 0, 0)}[envelope]
        return b'GP\x00' + bytes([envelope << 1 | 1]) + b'\xe6\x10\x00\x00' + env + \
            shapely.to_wkb(g, byte_order=int(order == 'little'))
    good = [shapely.Polygon([(135 + i, 34), (135.5 + i, 34), (135 + i, 34.5), (135 + i, 34)])
            for i in range(3)]
    mixed = [blob(good[0], 0), blob(good[1], 1), blob(good[2], 2)]
    coords, offsets = polygon_coordinates(mixed)
    _, want, want_offsets = shapely.to_ragged_array(good)
    assert np.array_equal(coords, want)
    assert all(np.array_equal(a, b) for a, b in zip(offsets, want_offsets))
    holed = shapely.box(0, 0, 2, 2).difference(shapely.box(0.5, 0.5, 1, 1))
    odd = [blob(good[0], order='big'), blob(holed), blob(shapely.MultiPolygon([good[0]])),
           blob(shapely.Polygon([(0, 0, 1), (1, 0, 1), (0, 1, 1), (0, 0, 1)])),
           blob(shapely.Point(1, 2)), blob(shapely.Polygon()), None, b'GP\x00\x03',
           blob(good[0])[:-16] + struct.pack('<2d', 9, 9),   # a ring that is not closed
           blob(good[0])[:-1]]
    for b in odd:
        assert polygon_coordinates(mixed + [b]) is None, b


def test_one_item_geometry_is_shapelys_geo_interface():
    """An item by id's geometry, read from its blob with struct when it is a little-endian 2D
    Polygon or MultiPolygon: the same dict as shapely's __geo_interface__ (and the same JSON);
    anything else goes to shapely, errors included."""
    import struct
    import shapely
    from ogcapi.gpkg_read import _polygonal, geometries_to_geojson

    def blob(g, order='little'):
        return b'GP\x00\x03\xe6\x10\x00\x00' + struct.pack('<4d', *g.bounds) + \
            shapely.to_wkb(g, byte_order=int(order == 'little'))

    wkts = ['POLYGON ((0 0, 1 0, 1 1, 0 0))',
            'POLYGON ((0 0, 2 0, 2 2, 0 2, 0 0), (0.5 0.5, 1 0.5, 1 1, 0.5 0.5))',
            'POLYGON ((134.90000000000001 34.6, -0 34.6, 1e-7 1.5e15, 134.90000000000001 34.6))',
            'MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5), (5.1 5.1, 5.2 5.1, '
            '5.2 5.2, 5.1 5.1)))']
    for g in shapely.from_wkt(wkts):
        read = _polygonal(shapely.to_wkb(g, byte_order=1))
        assert read == g.__geo_interface__, g.wkt
        assert dumps(geometries_to_geojson([blob(g)])[0]) == dumps(g.__geo_interface__)
    unclosed = shapely.to_wkb(shapely.from_wkt(wkts[0]), byte_order=1)[:-16] + \
        struct.pack('<2d', 9, 9)
    multi = shapely.to_wkb(shapely.from_wkt(wkts[3]), byte_order=1)
    others = [shapely.to_wkb(shapely.from_wkt(wkts[0]), byte_order=0),     # big-endian
              shapely.to_wkb(shapely.from_wkt('POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))'),
                             byte_order=1),
              shapely.to_wkb(shapely.from_wkt('POLYGON EMPTY'), byte_order=1),
              shapely.to_wkb(shapely.from_wkt('MULTIPOLYGON EMPTY'), byte_order=1),
              shapely.to_wkb(shapely.from_wkt('LINESTRING (0 0, 1 1)'), byte_order=1),
              unclosed, multi[:-1], multi + b'\x00', multi[:20], b'\x01\x03\x00']
    for w in others:
        assert _polygonal(w) is None, w
    with pytest.raises(shapely.errors.ShapelyError):   # shapely's, as before (the provider's 500)
        geometries_to_geojson([b'GP\x00\x01\xe6\x10\x00\x00' + unclosed])
