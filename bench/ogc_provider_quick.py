"""Quick figures for the OGC API over geo.provider.GPKGProvider (prints only).

Same queries as the pygeoapi study (shared/reference/pygeoapi.md §4), on
100,000 random points in Hyogo's bbox, served by one gunicorn sync worker
(werkzeug if gunicorn is missing), one new connection per request, median of
10 after one warm-up:
  (a) items?limit=1000  (b) &offset=90000  (c) bbox ~1%  (d) items/54321
  (e) a property filter  (f) sortby  (g) output in JGD2011
plus the provider alone (no HTTP, no pygeoapi) for the same queries.

    PYTHONPATH=. python bench/ogc_provider_quick.py [--data DIR] [--keep]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

N = 100_000
BBOX = '135.10,34.62,135.222,34.773'
CITIES = ['神戸市', '姫路市', '尼崎市', '明石市', '西宮市', '洲本市', '芦屋市', '伊丹市',
          '相生市', '豊岡市', '加古川市', '赤穂市', '西脇市', '宝塚市', '三木市', '高砂市',
          '川西市', '小野市', '三田市', '加西市', '丹波篠山市', '養父市', '丹波市',
          '南あわじ市', '朝来市', '淡路市', '宍粟市', '加東市', 'たつの市', '猪名川町',
          '多可町', '稲美町', '播磨町', '市川町', '福崎町', '神河町', '太子町', '上郡町',
          '佐用町', '香美町', '新温泉町']


def make_gpkg(path, n=N, seed=42):
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, n)
    gdf = gpd.GeoDataFrame({
        'id': np.arange(1, n + 1),
        'name': [f'指定避難所{i:06d}号' for i in range(1, n + 1)],
        'category': rng.choice(['指定避難所', '指定緊急避難場所', '福祉避難所'], n),
        'city': city,
        'address': [f'兵庫県{c}{rng.integers(1, 9)}丁目{rng.integers(1, 30)}番' for c in city],
        'capacity': rng.integers(10, 2000, n),
        'floor_area_m2': rng.uniform(50, 5000, n).round(1),
        'opened': pd.to_datetime(rng.integers(0, 15000, n), unit='D').strftime('%Y-%m-%d'),
        'phone': [f'078-{rng.integers(100, 999)}-{rng.integers(1000, 9999)}' for _ in range(n)],
        'flood_depth_rank': rng.choice(['0.5m未満', '0.5〜3m', '3〜5m', '5m以上'], n),
        'barrier_free': rng.integers(0, 2, n).astype(bool),
    }, geometry=gpd.points_from_xy(rng.uniform(134.25, 135.47, n),
                                   rng.uniform(34.15, 35.68, n)), crs=4326)
    gdf.to_file(path, layer='features', driver='GPKG')


def bench_app():
    """App factory for gunicorn (reads RENKEI_BENCH_GPKG / RENKEI_BENCH_URL)."""
    from flask import Flask
    from catalog.ogc_views import register_ogcapi
    from geo.ogcapi import OGCAPI
    path = os.environ['RENKEI_BENCH_GPKG']
    cols = [{'id': 'shelters', 'title': '避難所（ベンチマーク）', 'description': '10万点',
             'keywords': ['避難所'], 'bbox': [134.25, 34.15, 135.47, 35.68],
             'path': path, 'layer': 'features', 'count': N}]
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(os.environ['RENKEI_BENCH_URL'], lambda: cols, lambda: '1'))
    return app


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(port, env):
    gunicorn = shutil.which('gunicorn', path=os.path.dirname(sys.executable)) or shutil.which('gunicorn')
    if gunicorn:
        cmd = [gunicorn, '-w', '1', '-b', f'127.0.0.1:{port}', '--log-level', 'warning',
               'bench.ogc_provider_quick:bench_app()']
        what = 'gunicorn, 1 sync worker'
    else:
        cmd = [sys.executable, '-c', 'from werkzeug.serving import run_simple;'
               'from bench.ogc_provider_quick import bench_app;'
               f'run_simple("127.0.0.1", {port}, bench_app(), threaded=True)']
        what = 'werkzeug dev server'
    proc = subprocess.Popen(cmd, env=env)
    return proc, what


def timed(url, runs=10):
    import requests
    requests.get(url).raise_for_status()  # warm-up
    times, size, body = [], 0, None
    for _ in range(runs):
        t = time.perf_counter()
        r = requests.get(url, headers={'Connection': 'close'})
        body = r.content
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        size = len(body)
    return statistics.median(times), size, r.json()


def provider_only(path):
    from geo.ogcapi import resource_for
    from geo.provider import GPKGProvider
    pdef = resource_for({'id': 'x', 'title': 't', 'path': path, 'layer': 'features'})['providers'][0]
    bbox = [float(v) for v in BBOX.split(',')]
    cases = {
        '(a) limit=1000': lambda p: p.query(limit=1000),
        '(b) offset=90000': lambda p: p.query(limit=1000, offset=90000),
        '(c) bbox ~1%': lambda p: p.query(limit=1000, bbox=bbox),
        '(d) item 54321': lambda p: p.get('54321'),
    }
    out = {}
    for name, fn in cases.items():
        fn(GPKGProvider(pdef))
        times = []
        for _ in range(10):
            t = time.perf_counter()
            fn(GPKGProvider(pdef))  # pygeoapi builds a provider per request too
            times.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(times)
    return out


def openapi_50(data):
    """Rebuild and OpenAPI generation cost with 50 collections (small files)."""
    from geo.ogcapi import OGCAPI
    src = os.path.join(data, 'small.gpkg')
    if not os.path.exists(src):
        make_gpkg(src, n=100)
    cols = []
    for i in range(50):
        path = os.path.join(data, f'c{i:02d}.gpkg')
        if not os.path.exists(path):
            shutil.copy(src, path)
        cols.append({'id': f'c{i:02d}', 'title': f'コレクション{i}', 'description': '説明',
                     'keywords': ['兵庫県'], 'bbox': [134.25, 34.15, 135.47, 35.68],
                     'path': path, 'layer': 'features', 'count': 100})
    version = ['1']
    ogc = OGCAPI('http://127.0.0.1/ogcapi', lambda: cols, lambda: version[0])
    out = {}
    t = time.perf_counter()
    api = ogc.api()
    out['first build (50 collections)'] = time.perf_counter() - t
    t = time.perf_counter()
    ogc.openapi(api)
    out['first /openapi (lazy imports, 50 files opened)'] = time.perf_counter() - t
    version[0] = '2'
    t = time.perf_counter()
    api = ogc.api()
    out['rebuild after version change'] = time.perf_counter() - t
    t = time.perf_counter()
    ogc.openapi(api)
    out['/openapi after rebuild'] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(1000):
        ogc.api()
    out['api() with unchanged version, x1000'] = time.perf_counter() - t
    return {k: v * 1000 for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', help='directory for bench.gpkg (reused if present)')
    ap.add_argument('--keep', action='store_true', help='keep the temporary data')
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    data = args.data or tempfile.mkdtemp(prefix='renkei-bench-')
    path = os.path.join(data, 'bench.gpkg')
    if not os.path.exists(path):
        t = time.perf_counter()
        make_gpkg(path)
        print(f'generated {N:,} points in {time.perf_counter() - t:.1f} s '
              f'({os.path.getsize(path) / 1e6:.1f} MB)')
    port = free_port()
    base = f'http://127.0.0.1:{port}/ogcapi'
    env = dict(os.environ, RENKEI_BENCH_GPKG=path, RENKEI_BENCH_URL=base,
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')])))
    proc, what = start_server(port, env)
    try:
        import requests
        for _ in range(100):
            try:
                requests.get(f'{base}/conformance', timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        items = f'{base}/collections/shelters/items'
        queries = {
            '(a) limit=1000': f'{items}?limit=1000',
            '(b) offset=90000': f'{items}?limit=1000&offset=90000',
            '(c) bbox ~1%': f'{items}?bbox={BBOX}&limit=1000',
            '(d) item 54321': f'{items}/54321',
            '(e) city=姫路市': f'{items}?city=姫路市&limit=1000',
            '(f) sortby=-capacity': f'{items}?sortby=-capacity&limit=1000',
            '(g) crs=EPSG:6668': f'{items}?limit=1000&crs=http://www.opengis.net/def/crs/EPSG/0/6668',
            '/conformance': f'{base}/conformance',
        }
        print(f'\nHTTP, {what}, median of 10 (ms):')
        for name, url in queries.items():
            ms, size, doc = timed(url)
            extra = ''
            if 'numberMatched' in doc:
                extra = f"matched={doc['numberMatched']} returned={doc['numberReturned']}"
            print(f'  {name:18} {ms:8.1f}   {size:>9,} B  {extra}')
        # Deliberately cold: the first /openapi of a version generates it.
        t = time.perf_counter()
        requests.get(f'{base}/openapi').raise_for_status()
        print(f'  {"/openapi (first)":18} {(time.perf_counter() - t) * 1000:8.1f}')
    finally:
        proc.terminate()
        proc.wait(10)
    print('\nprovider only, in-process (ms):')
    for name, ms in provider_only(path).items():
        print(f'  {name:18} {ms:8.2f}')
    print('\nlive config, in-process (ms):')
    for name, ms in openapi_50(data).items():
        print(f'  {name:40} {ms:8.1f}')
    if not args.data and not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == '__main__':
    main()
