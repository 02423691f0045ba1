"""OGC API Features benchmark of issue 6 (prints figures; never part of the tests).

Data (synthetic, Hyogo's bbox, 10 attributes incl. Japanese text), cached in bench/out/:
1,000,000 points and 200,000 polygons as GeoPackage (+ the polygons as GeoJSON for pygeoapi's
stock GeoJSON provider). Through HTTP, 1 gunicorn sync worker, a new connection per request,
median of --runs after one warm-up:
  (a) items?limit=1000  (b) limit=1000&offset=900000 (points; 180000 for polygons)
  (c) bbox holding ~1%, limit=1000  (d) one item by id
  (e) filter=capacity > 500 AND name LIKE '%小学校%' (CQL2 text)
plus peak worker RSS (VmHWM), pygeoapi's stock providers where they run here, the in-process
floor (pyogrio read_arrow + GeoJSON dicts + json.dumps), and wrk with 2 workers on (a)/(c)/(d).

    PYTHONPATH=. python bench/ogcapi_bench.py [--runs 20] [--wrk-seconds 30]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'bench', 'out')
HYOGO = (134.25, 34.15, 135.47, 35.68)
BBOX1 = '134.80,34.70,134.922,34.853'  # 0.1 x 0.1 of Hyogo's extent: ~1% of features
CQL = "capacity > 500 AND name LIKE '%小学校%'"
SETS = {'points': 1_000_000, 'polygons': 200_000}
CITIES = ['神戸市', '姫路市', '尼崎市', '明石市', '西宮市', '加古川市', '宝塚市', '加西市',
          '養父市', '豊岡市', '三田市', '丹波市', '淡路市', 'たつの市', '香美町']
KINDS = ['小学校', '中学校', '公民館', '体育館', '高等学校', 'コミュニティセンター']


def free_port():
    sys.path.insert(0, ROOT)
    from tests.servers import free_port as port
    return port()


def make(kind, n, path, seed=6):
    import geopandas as gpd
    import numpy as np
    import shapely
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, n)
    k = rng.choice(KINDS, n)
    x = rng.uniform(HYOGO[0], HYOGO[2], n)
    y = rng.uniform(HYOGO[1], HYOGO[3], n)
    if kind == 'points':
        geom = gpd.points_from_xy(x, y)
    else:  # small irregular pentagons, ~100-300 m across
        ang = np.sort(rng.uniform(0, 2 * np.pi, (n, 5)), axis=1)
        r = rng.uniform(0.0005, 0.0015, (n, 1))
        ring = np.stack([x[:, None] + r * np.cos(ang), y[:, None] + r * np.sin(ang)], axis=2)
        ring = np.concatenate([ring, ring[:, :1]], axis=1)
        geom = shapely.polygons(ring)
    gdf = gpd.GeoDataFrame({
        'id': np.arange(1, n + 1),
        'name': [f'{c}立第{i}{kk}' for i, (c, kk) in enumerate(zip(city, k))],
        'category': k, 'city': city,
        'address': [f'兵庫県{c}本町{i % 9 + 1}丁目{i % 30 + 1}番' for i, c in enumerate(city)],
        'capacity': rng.integers(0, 2000, n),
        'floor_area_m2': rng.uniform(50, 5000, n).round(1),
        'opened': [f'{y}-04-01' for y in rng.integers(1960, 2024, n)],
        'phone': [f'078-{i % 900 + 100}-{i % 9000 + 1000}' for i in range(n)],
        'barrier_free': rng.integers(0, 2, n).astype(bool),
    }, geometry=geom, crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')
    if kind == 'polygons':
        gdf.to_file(path.replace('.gpkg', '.geojson'), driver='GeoJSON')


def data_files():
    os.makedirs(OUT, exist_ok=True)
    out = {}
    for kind, n in SETS.items():
        path = os.path.join(OUT, f'{kind}_{n}.gpkg')
        if not os.path.exists(path):
            t = time.perf_counter()
            make(kind, n, path)
            print(f'generated {kind}: {n:,} in {time.perf_counter() - t:.0f} s', flush=True)
        out[kind] = path
    return out


def bench_app():
    """App factory for gunicorn: our OGC API over the two files (RENKEI_BENCH_* env)."""
    from flask import Flask
    from ogcapi.blueprint import register_ogcapi
    from ogcapi.api import OGCAPI
    files = json.loads(os.environ['RENKEI_BENCH_FILES'])
    cols = [{'id': kind, 'title': f'{kind}（ベンチマーク）', 'bbox': list(HYOGO),
             'path': path, 'layer': 'features', 'count': SETS[kind]}
            for kind, path in files.items()]
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(os.environ['RENKEI_BENCH_URL'], lambda: cols, lambda: '1'))
    return app


def gunicorn(app, port, env, workers=1):
    exe = shutil.which('gunicorn', path=os.path.dirname(sys.executable))
    proc = subprocess.Popen([exe, '-w', str(workers), '-b', f'127.0.0.1:{port}',
                             '--log-level', 'warning', '--timeout', '600', app], env=env)
    import requests
    for _ in range(300):
        try:
            requests.get(f'http://127.0.0.1:{port}/', timeout=2)
            return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f'{app} did not start')


def worker_hwm(master):
    with open(f'/proc/{master}/task/{master}/children') as fh:
        pids = [int(p) for p in fh.read().split()]
    out = []
    for pid in pids:
        with open(f'/proc/{pid}/status') as fh:
            out += [int(line.split()[1]) / 1024 for line in fh if line.startswith('VmHWM')]
    return max(out)


def timed(url, runs, params=None):
    import requests
    r = requests.get(url, params=params, timeout=600)
    r.raise_for_status()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = requests.get(url, params=params, headers={'Connection': 'close'}, timeout=600)
        _ = r.content
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    doc = r.json()
    return statistics.median(times), len(r.content), doc


def queries(n):
    deep = 900_000 if n == 1_000_000 else int(n * 0.9)
    return {
        '(a) limit=1000': ('items', {'limit': 1000}),
        f'(b) offset={deep}': ('items', {'limit': 1000, 'offset': deep}),
        '(c) bbox ~1%': ('items', {'bbox': BBOX1, 'limit': 1000}),
        '(d) item by id': ('items/543210' if n > 543210 else 'items/54321', None),
        '(e) CQL2 filter': ('items', {'filter': CQL, 'limit': 1000}),
    }


# -- the floor: pyogrio (GDAL, Arrow) read + GeoJSON dicts + json.dumps ----------------------

def floor(path, n, runs):
    import pyogrio
    import shapely
    deep = 900_000 if n == 1_000_000 else int(n * 0.9)
    bbox = tuple(float(v) for v in BBOX1.split(','))
    fid = 543210 if n > 543210 else 54321
    cases = {
        '(a) limit=1000': dict(max_features=1000),
        f'(b) offset={deep}': dict(skip_features=deep, max_features=1000),
        '(c) bbox ~1%': dict(bbox=bbox, max_features=1000),
        '(d) item by id': dict(where=f'fid = {fid}'),
        '(e) CQL2 filter': dict(where="capacity > 500 AND name LIKE '%小学校%'",
                                max_features=1000),
    }
    out = {}
    for name, kw in cases.items():
        def once():
            # pyarrow is not installed here, so the numpy read (same GDAL read path).
            meta, _, wkb, data = pyogrio.raw.read(path, **kw)
            cols = {f: (d.tolist() if hasattr(d, 'tolist') else list(d))
                    for f, d in zip(meta['fields'], data)}
            geoms = shapely.from_wkb(wkb)
            gj = [g.__geo_interface__ if g.geom_type != 'Point' else
                  {'type': 'Point', 'coordinates': [g.x, g.y]} for g in geoms]
            names = list(cols)
            feats = [{'type': 'Feature', 'geometry': g,
                      'properties': dict(zip(names, vals))}
                     for g, vals in zip(gj, zip(*cols.values()))]
            return json.dumps({'type': 'FeatureCollection', 'features': feats},
                              ensure_ascii=False, default=str)
        once()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            once()
            times.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(times)
    return out


# -- pygeoapi's stock GeoJSON provider on the polygons ---------------------------------------

def stock_geojson(geojson_path, runs, root_env):
    import yaml
    from ogcapi.api import build_config
    from pygeoapi.openapi import get_oas
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    cfg = build_config(base, [])
    cfg['resources']['polygons'] = {
        'type': 'collection', 'title': 'polygons', 'description': 'stock GeoJSON',
        'keywords': ['bench'], 'links': [],
        'extents': {'spatial': {'bbox': list(HYOGO)}},
        'providers': [{'type': 'feature', 'name': 'GeoJSON', 'data': geojson_path,
                       'id_field': 'id'}]}
    tmp = tempfile.mkdtemp(prefix='renkei-stock-')
    cfg_path, oas_path = os.path.join(tmp, 'config.yml'), os.path.join(tmp, 'openapi.yml')
    with open(cfg_path, 'w') as fh:
        yaml.safe_dump(cfg, fh, allow_unicode=True)
    with open(oas_path, 'w') as fh:
        yaml.safe_dump(json.loads(json.dumps(get_oas(cfg, fail_on_invalid_collection=False),
                                             default=str)), fh)
    env = dict(root_env, PYGEOAPI_CONFIG=cfg_path, PYGEOAPI_OPENAPI=oas_path)
    proc = gunicorn('pygeoapi.flask_app:APP', port, env)
    try:
        ms, size, doc = timed(f'{base}/collections/polygons/items', runs, {'limit': 1000})
        return ms, worker_hwm(proc.pid), doc['numberReturned']
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def run_wrk(base, seconds):
    wrk = shutil.which('wrk')
    if not wrk:
        return None
    script = os.path.join(tempfile.mkdtemp(), 'mix.lua')
    with open(script, 'w') as fh:
        fh.write('local paths = {"/ogcapi/collections/points/items?limit=1000",\n'
                 f' "/ogcapi/collections/points/items?limit=1000&bbox={BBOX1}",\n'
                 ' "/ogcapi/collections/points/items/543210"}\n'
                 'local i = 0\n'
                 'request = function()\n  i = i % 3 + 1\n'
                 '  return wrk.format("GET", paths[i])\nend\n')
    r = subprocess.run([wrk, '-t2', '-c4', f'-d{seconds}s', '-s', script, base],
                       capture_output=True, text=True)
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=20)
    ap.add_argument('--stock-runs', type=int, default=5)
    ap.add_argument('--wrk-seconds', type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    files = data_files()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    env_ours = dict(env, RENKEI_BENCH_FILES=json.dumps(files), RENKEI_BENCH_URL=base + '/ogcapi')
    results = {}
    proc = gunicorn('bench.ogcapi_bench:bench_app()', port, env_ours)
    try:
        for kind, n in SETS.items():
            print(f'\nours, {kind} ({n:,}), HTTP, 1 gunicorn worker, median of {args.runs} (ms):',
                  flush=True)
            for name, (path, params) in queries(n).items():
                ms, size, doc = timed(f'{base}/ogcapi/collections/{kind}/{path}', args.runs,
                                      params)
                results[(kind, name)] = ms
                extra = (f"matched={doc['numberMatched']} returned={doc['numberReturned']}"
                         if 'numberMatched' in doc else '')
                print(f'  {name:20} {ms:8.1f}  {size:>9,} B  {extra}', flush=True)
        print(f'  peak worker RSS (VmHWM): {worker_hwm(proc.pid):.0f} MiB')
    finally:
        proc.terminate()
        proc.wait(10)

    print(f'\nfloor, in-process: pyogrio raw read (numpy; no pyarrow here) + GeoJSON dicts + json.dumps, '
          f'median of {args.runs} (ms):')
    for kind, n in SETS.items():
        for name, ms in floor(files[kind], n, args.runs).items():
            ours = results[(kind, name)]
            print(f'  {kind:8} {name:20} {ms:8.1f}   ours/floor = {ours / ms:5.2f}')

    print('\npygeoapi stock providers:')
    print('  SQLiteGPKG: not runnable here (this Python\'s sqlite3 has no '
          'enable_load_extension; SpatiaLite cannot be loaded)')
    print('  OGR: not runnable here (GDAL Python bindings, osgeo, not installed)')
    ms, hwm, returned = stock_geojson(files['polygons'].replace('.gpkg', '.geojson'),
                                      args.stock_runs, env)
    ours = results[('polygons', '(a) limit=1000')]
    print(f'  GeoJSON, polygons (a) limit=1000: {ms:.0f} ms (median of {args.stock_runs}), '
          f'returned={returned}, peak RSS {hwm:.0f} MiB; ours is {ms / ours:.0f}x faster')

    port = free_port()
    base = f'http://127.0.0.1:{port}'
    env_ours['RENKEI_BENCH_URL'] = base + '/ogcapi'
    proc = gunicorn('bench.ogcapi_bench:bench_app()', port, env_ours, workers=2)
    try:
        out = run_wrk(base, args.wrk_seconds)
        print(f'\nwrk, 2 gunicorn workers, {args.wrk_seconds} s, mix of (a)/(c)/(d) on points:')
        print(out if out is not None else '  wrk not installed (apt-get install -y wrk)')
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == '__main__':
    main()
