"""ogcapi.feature_text writes the same bytes as json.dumps of the feature dicts (the items view's
encoding), whatever the values: the fast column path and its fallbacks."""
import datetime
import json
import math

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
