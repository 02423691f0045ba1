"""OGC API Features Part 2 (CRS) over HTTP: output coordinates and bbox-crs, axis order included.

The expected coordinates come from pyproj with each CRS's authority axis order
(always_xy=False): CRS84 is lon/lat, EPSG:4326 and 6668 are lat/lon, EPSG:6673 (JGD2011 plane
rectangular V) is northing/easting, EPSG:3857 is easting/northing.
"""

import functools

import numpy as np
import pyproj
import pytest
import requests
import shapely

from tests.test_ogcapi import FakeCatalog, collection, make_points, make_wards, serve

CRS84 = 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'
EPSG = 'http://www.opengis.net/def/crs/EPSG/0/'
ALL = [CRS84, EPSG + '4326', EPSG + '6668', EPSG + '6673', EPSG + '3857']
N = 800


@functools.lru_cache
def _to(uri):
    # Cached: PROJ's operation search for CRS84 -> JGD2011 takes most of a second.
    target = pyproj.CRS('OGC:CRS84') if uri == CRS84 else pyproj.CRS.from_epsg(
        int(uri.rsplit('/', 1)[1]))
    return pyproj.Transformer.from_crs(pyproj.CRS('OGC:CRS84'), target)


def to_crs(uri, x, y):
    """pyproj's answer for CRS84 (x=lon, y=lat) -> uri, in the CRS's own axis order."""
    return _to(uri).transform(x, y)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('crs')
    pts = make_points(d / 'pts.gpkg', N, 5)
    wards = make_wards(d / 'wards.gpkg')
    return {'dir': d, 'pts': pts, 'wards': wards}


@pytest.fixture(scope='module')
def base(data):
    cat = FakeCatalog([collection('pts', data['dir'] / 'pts.gpkg', '地点', N),
                       collection('wards', data['dir'] / 'wards.gpkg', '区', 3)])
    with serve(cat) as (url, _):
        yield url


@pytest.mark.parametrize('uri', ALL)
def test_output_coordinates_and_header(base, data, uri):
    r = requests.get(f'{base}/collections/pts/items', timeout=30,
                     params={'crs': uri, 'limit': 50})
    assert r.status_code == 200, r.text
    assert r.headers['Content-Crs'] == f'<{uri}>'
    src = data['pts']
    for f in r.json()['features']:
        p = src.geometry.iloc[f['id'] - 1]
        assert f['geometry']['coordinates'] == pytest.approx(to_crs(uri, p.x, p.y), abs=1e-6)
    one = requests.get(f'{base}/collections/pts/items/7', params={'crs': uri}, timeout=30)
    assert one.headers['Content-Crs'] == f'<{uri}>'
    p = src.geometry.iloc[6]
    assert one.json()['geometry']['coordinates'] == pytest.approx(to_crs(uri, p.x, p.y),
                                                                  abs=1e-6)


def test_axis_order_is_visible_in_numbers(base):
    # Hyogo: lon ~135, lat ~35; zone V northing is near the origin at 36N, easting small.
    c = {uri: requests.get(f'{base}/collections/pts/items/1', params={'crs': uri},
                           timeout=30).json()['geometry']['coordinates'] for uri in ALL}
    assert c[CRS84][0] > 134 and c[CRS84][1] < 36
    assert c[EPSG + '4326'][0] < 36 and c[EPSG + '4326'][1] > 134
    assert c[EPSG + '6668'] == pytest.approx(c[EPSG + '4326'], abs=1e-6)
    northing, easting = c[EPSG + '6673']
    assert -250_000 < northing < 0 and -100_000 < easting < 150_000
    assert c[EPSG + '3857'][0] > 1.4e7 and 3.9e6 < c[EPSG + '3857'][1] < 4.3e6


def test_polygon_coordinates_plane_rectangular(base, data):
    uri = EPSG + '6673'
    doc = requests.get(f'{base}/collections/wards/items', params={'crs': uri},
                       timeout=30).json()
    for f in doc['features']:
        src = data['wards'].geometry.iloc[f['id'] - 1]
        got = np.array(f['geometry']['coordinates'][0])
        xs, ys = np.array(src.exterior.coords).T
        want = np.column_stack(to_crs(uri, xs, ys))
        assert got == pytest.approx(want, abs=1e-6)


BOX = (134.6, 34.6, 135.0, 35.0)  # CRS84


@pytest.mark.parametrize('uri', ALL)
def test_bbox_crs(base, data, uri):
    src = data['pts']
    target = pyproj.CRS('OGC:CRS84') if uri == CRS84 else pyproj.CRS.from_epsg(
        int(uri.rsplit('/', 1)[1]))
    bbox = _to(uri).transform_bounds(*BOX)  # in the CRS's axis order, as the client sends it
    a, b = to_crs(uri, src.geometry.x.values, src.geometry.y.values)
    inside = (a >= bbox[0]) & (a <= bbox[2]) & (b >= bbox[1]) & (b <= bbox[3])
    want = set((np.nonzero(inside)[0] + 1).tolist())
    assert len(want) > 20
    params = {'bbox': ','.join(map(repr, bbox)), 'bbox-crs': uri, 'limit': 1000}
    doc = requests.get(f'{base}/collections/pts/items', params=params, timeout=30).json()
    got = {f['id'] for f in doc['features']}
    if uri.endswith('6673'):
        # A plane-rectangular box is not a lon/lat box: the server filters by the lon/lat
        # envelope of the box, so it may return a few points just outside, never fewer.
        assert want <= got and len(got - want) <= 0.05 * len(want)
        lon_lat = shapely.box(*pyproj.Transformer.from_crs(target, pyproj.CRS('OGC:CRS84'))
                              .transform_bounds(*bbox))
        assert all(lon_lat.intersects(src.geometry.iloc[i - 1]) for i in got)
    else:
        assert got == want
    hits = requests.get(f'{base}/collections/pts/items', timeout=30,
                        params={**params, 'resulttype': 'hits'}).json()
    assert hits['numberMatched'] == len(got)


def test_lon_lat_bbox_in_lat_lon_crs_finds_nothing(base):
    # The mistake #2010 describes: lon,lat sent as EPSG:4326 lands outside Japan.
    doc = requests.get(f'{base}/collections/pts/items', timeout=30, params={
        'bbox': ','.join(map(str, BOX)), 'bbox-crs': EPSG + '4326'}).json()
    assert doc['numberMatched'] == 0


@pytest.mark.parametrize('params', [
    {'crs': EPSG + '32654'}, {'bbox-crs': EPSG + '32654', 'bbox': '1,2,3,4'},
    {'bbox-crs': EPSG + '4326'}, {'crs': 'EPSG:4326'},
])
def test_unsupported_crs_is_400(base, params):
    r = requests.get(f'{base}/collections/pts/items', params=params, timeout=30)
    assert r.status_code == 400, r.text


def test_collection_lists_crs(base):
    doc = requests.get(f'{base}/collections/pts', timeout=30).json()
    assert set(ALL) <= set(doc['crs'])
    assert doc['storageCrs'] == CRS84
