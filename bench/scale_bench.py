"""Issue 14's scale benchmark: renkei on GeoPackage and on PostGIS against pygeoapi's stock
PostgreSQL and SQLiteGPKG providers and tipg, on the same data (prints figures; never a test).

Data (synthetic, cached in bench/out/): --points (5,000,000) points and --polygons (900,000)
A31-like polygons in Hyogo's bbox, ~10 attributes with Japanese text, as GeoPackages, loaded
into PostGIS tables of the version layout (notes/PGMODE.md) in the database --db (schema
`bench`; kept for the next run, --drop-db to remove it).

Through HTTP, 2 workers per server, median and p95 of --runs (one warm-up first), the systems
interleaved request by request, and every request different from the others (offset, bbox, id
and filter constant vary) so that no cache answers the same question twice:
  (a) items?limit=1000   (b) a deep page: limit=1000&offset=90 %   (c) bbox holding ~1 %
  (d) one item by id     (e) filter=capacity > N AND name LIKE '%小学校%' (CQL2 text)
Then: the two queries of a hazard lookup (/api/hazards) on these tables, p50/p95 in process;
search p50/p95 over --search datasets in PostgreSQL (store.search); and wrk on 2 renkei
PostGIS servers × 2 workers with the peak of PostgreSQL connections against the budget
(servers × workers × (RENKEI_DB_POOL_SIZE + RENKEI_DB_MAX_OVERFLOW)) and the peak worker RSS.

The stock servers run in environments of their own, never renkei's (--stock-venv, --tipg-venv):
    apt-get install libsqlite3-mod-spatialite
    /usr/bin/python3 -m venv --system-site-packages STOCK    # Debian's sqlite3 loads SpatiaLite
    STOCK/bin/pip install pygeoapi==0.21.0 psycopg2-binary geoalchemy2 gunicorn
    python3 -m venv TIPG && TIPG/bin/pip install tipg uvicorn

    PYTHONPATH=. .venv/bin/python bench/scale_bench.py --stock-venv STOCK --tipg-venv TIPG
    PYTHONPATH=. .venv/bin/python bench/scale_bench.py --points 20000 --polygons 5000 --runs 5
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'bench', 'out')
HYOGO = (134.25, 34.15, 135.47, 35.68)
# ~1 % of Hyogo's bbox (0.1 × 0.1 of each side): ~1 % of the uniformly spread features.
BBOX_SPAN = ((HYOGO[2] - HYOGO[0]) / 10, (HYOGO[3] - HYOGO[1]) / 10)
SCHEMA = 'bench'
CITIES = ['神戸市', '姫路市', '尼崎市', '明石市', '西宮市', '加古川市', '宝塚市', '加西市',
          '養父市', '豊岡市', '三田市', '丹波市', '淡路市', 'たつの市', '香美町']
KINDS = ['小学校', '中学校', '公民館', '体育館', '高等学校', 'コミュニティセンター']
RIVERS = ['加古川', '揖保川', '市川', '夢前川', '武庫川', '円山川', '千種川', '猪名川']
DEPTHS = ['0.5m未満', '0.5m以上3m未満', '3m以上5m未満', '5m以上10m未満', '10m以上20m未満', '20m以上']
CHUNK = 250_000


# -- data -----------------------------------------------------------------------------------

def make(kind: str, n: int, path: str, seed: int = 14) -> None:
    """The synthetic layer, written in chunks (5M rows never sit in memory at once)."""
    import geopandas as gpd
    import numpy as np
    import pyogrio
    import shapely
    tmp = os.path.join(os.path.dirname(path), '.writing-' + os.path.basename(path))
    if os.path.exists(tmp):
        os.unlink(tmp)
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        i = np.arange(start, start + m)
        city, k = rng.choice(CITIES, m), rng.choice(KINDS, m)
        x, y = rng.uniform(HYOGO[0], HYOGO[2], m), rng.uniform(HYOGO[1], HYOGO[3], m)
        if kind == 'points':
            geom = gpd.points_from_xy(x, y)
        else:   # A31-like: small irregular cells of ~100–300 m
            ang = np.sort(rng.uniform(0, 2 * np.pi, (m, 6)), axis=1)
            r = rng.uniform(0.0005, 0.0015, (m, 1))
            ring = np.stack([x[:, None] + r * np.cos(ang), y[:, None] + r * np.sin(ang)], 2)
            geom = shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))
        rank = rng.integers(1, 7, m)
        frame = gpd.GeoDataFrame({
            'name': [f'{c}立第{j}{kk}' for j, c, kk in zip(i, city, k)],
            'category': k, 'city': city,
            'address': [f'兵庫県{c}本町{j % 9 + 1}丁目{j % 30 + 1}番' for j, c in zip(i, city)],
            'river': rng.choice(RIVERS, m),
            'depth_rank': rank, 'depth_range': np.array(DEPTHS)[rank - 1],
            'capacity': rng.integers(0, 2000, m),
            'area_m2': rng.uniform(50, 5000, m).round(1),
            'designated_on': [f'{v}-04-01' for v in rng.integers(1990, 2025, m)],
            'barrier_free': rng.integers(0, 2, m).astype(bool),
        }, geometry=geom, crs=4326)
        pyogrio.write_dataframe(frame, tmp, layer='features', driver='GPKG',
                                append=start > 0)
    os.replace(tmp, path)


def data_files(sizes: dict) -> dict:
    os.makedirs(OUT, exist_ok=True)
    out = {}
    for kind, n in sizes.items():
        path = os.path.join(OUT, f'scale_{kind}_{n}.gpkg')
        if not os.path.exists(path):
            t = time.perf_counter()
            make(kind, n, path)
            print(f'generated {kind}: {n:,} in {time.perf_counter() - t:.0f} s', flush=True)
        out[kind] = path
    return out


def db_url(server: str, db: str, search_path: bool = True) -> str:
    base = server.rsplit('/', 1)[0] + '/' + db
    return base + (f'?options=-csearch_path%3D{SCHEMA},public' if search_path else '')


def ensure_database(server: str, db: str) -> None:
    import psycopg
    with psycopg.connect(server, autocommit=True) as con:
        if not con.execute('SELECT 1 FROM pg_database WHERE datname = %s', (db,)).fetchone():
            con.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(db_url(server, db, False), autocommit=True) as con:
        con.execute('CREATE EXTENSION IF NOT EXISTS postgis')
        con.execute(f'CREATE SCHEMA IF NOT EXISTS {SCHEMA}')


def load_tables(server: str, db: str, files: dict, sizes: dict) -> dict:
    """kind -> version table holding the GeoPackage (loaded once; reused while its count
    matches). Written by renkei's own version writer, batch by batch from GDAL's Arrow
    stream."""
    import geopandas as gpd
    import pyogrio
    from sqlalchemy import text
    from store.db import make_engine
    from store.features_pg import table_name
    engine = make_engine(db_url(server, db))
    # The writer also pre-generates a large version's tile pyramid (store.tiles_pg), which the
    # items benchmark does not read: bench/tiles_bench.py measures that.
    os.environ['RENKEI_TILES_PREGEN_MIN'] = str(10 ** 12)
    tables = {}
    try:
        for kind, path in files.items():
            cid = f'bench-{kind}-{sizes[kind]}'
            table = table_name(cid, 1)
            with engine.connect() as conn:
                found = conn.execute(text('SELECT to_regclass(:t)'), {'t': table}).scalar()
                count = conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar() \
                    if found else None
            if count != sizes[kind]:
                from store.features_pg import PostGISWriter
                t = time.perf_counter()
                with pyogrio.open_arrow(path, layer='features', use_pyarrow=True,
                                        batch_size=CHUNK) as (meta, reader), \
                        PostGISWriter(None, cid, 1, engine=engine,
                                      promote_to_multi=kind != 'points') as writer:
                    for batch in reader:
                        frame = gpd.GeoDataFrame.from_arrow(batch)
                        writer.append(frame.rename_geometry('geometry')
                                      if frame.geometry.name != 'geometry' else frame)
                    writer.commit()
                print(f'loaded {kind} into PostGIS ({table}) in '
                      f'{time.perf_counter() - t:.0f} s', flush=True)
            tables[kind] = table
    finally:
        engine.dispose()
    return tables


# -- servers ---------------------------------------------------------------------------------

def renkei_app(mode: str):
    """App factory for gunicorn: renkei's OGC API over the bench layers (RENKEI_BENCH_* env),
    from the GeoPackages or from the PostGIS tables."""
    from flask import Flask
    from ogcapi.api import OGCAPI
    from ogcapi.blueprint import register_ogcapi
    layers = json.loads(os.environ['RENKEI_BENCH_LAYERS'])
    engine = None
    if mode == 'postgis':
        from store.db import make_engine
        engine = make_engine(os.environ['RENKEI_BENCH_PG'])
    cols = [{'id': kind, 'title': f'{kind}（ベンチマーク）', 'bbox': list(HYOGO),
             'path': f'postgis:{v["table"]}' if engine is not None else v['gpkg'],
             'layer': v['table'] if engine is not None else 'features', 'count': v['n']}
            for kind, v in layers.items()]
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(os.environ['RENKEI_BENCH_URL'], lambda: cols, lambda: '1',
                                **({'engine': engine} if engine is not None else {})))
    return app


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_up(url: str, proc) -> None:
    import requests
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f'server for {url} exited ({proc.returncode})')
        try:
            requests.get(url, timeout=30)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f'{url} did not start')


def start_renkei(mode, layers, pg, env, workers=2):
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    env = dict(env, RENKEI_BENCH_LAYERS=json.dumps(layers), RENKEI_BENCH_PG=pg,
               RENKEI_BENCH_URL=base + '/ogcapi')
    exe = shutil.which('gunicorn', path=os.path.dirname(sys.executable))
    proc = subprocess.Popen([exe, '-w', str(workers), '-b', f'127.0.0.1:{port}', '--log-level',
                             'warning', '--timeout', '600',
                             f"bench.scale_bench:renkei_app('{mode}')"], env=env)
    wait_up(base + '/ogcapi', proc)
    return proc, base + '/ogcapi'


def start_stock(venv, layers, server, db, tmp, workers=2):
    """pygeoapi 0.21 with its stock PostgreSQL provider (same tables) and SQLiteGPKG provider
    (same GeoPackages)."""
    import yaml
    from urllib.parse import urlsplit
    from ogcapi.api import build_config
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    cfg = build_config(base, [])
    cfg['server'].pop('templates', None)
    cfg['server']['limits'] = {'default_items': 10, 'max_items': 1000}
    u = urlsplit(server)
    for kind, v in layers.items():
        common = {'type': 'collection', 'title': kind, 'description': 'stock',
                  'keywords': ['bench'], 'links': [],
                  'extents': {'spatial': {'bbox': list(HYOGO)}}}
        cfg['resources'][f'{kind}-pg'] = dict(common, providers=[{
            'type': 'feature', 'name': 'PostgreSQL', 'id_field': 'fid', 'table': v['table'],
            'geom_field': 'geom',
            'data': {'host': u.hostname, 'port': u.port or 5432, 'dbname': db,
                     'user': u.username or 'postgres', 'password': u.password or '',
                     'search_path': [SCHEMA, 'public']}}])
        cfg['resources'][f'{kind}-gpkg'] = dict(common, providers=[{
            'type': 'feature', 'name': 'SQLiteGPKG', 'data': v['gpkg'], 'id_field': 'fid',
            'table': 'features'}])
    cfg_path, oas = os.path.join(tmp, 'stock.yml'), os.path.join(tmp, 'stock-openapi.yml')
    with open(cfg_path, 'w') as fh:
        yaml.safe_dump(cfg, fh, allow_unicode=True)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(PYGEOAPI_CONFIG=cfg_path, PYGEOAPI_OPENAPI=oas)
    subprocess.run([os.path.join(venv, 'bin', 'pygeoapi'), 'openapi', 'generate', cfg_path,
                    '--output-file', oas], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([os.path.join(venv, 'bin', 'gunicorn'), '-w', str(workers), '-b',
                             f'127.0.0.1:{port}', '--log-level', 'warning', '--timeout', '600',
                             'pygeoapi.flask_app:APP'], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)   # it logs a warning per request
    wait_up(base + '/', proc)
    return proc, base


def start_tipg(venv, server, db, workers=2):
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(DATABASE_URL=db_url(server, db, False), TIPG_DB_SCHEMAS=json.dumps([SCHEMA]),
               TIPG_MAX_FEATURES_PER_QUERY='10000')
    proc = subprocess.Popen([os.path.join(venv, 'bin', 'uvicorn'), 'tipg.main:app', '--host',
                             '127.0.0.1', '--port', str(port), '--workers', str(workers),
                             '--log-level', 'warning'], env=env)
    wait_up(base + '/collections', proc)
    return proc, base


def stop(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- measuring ------------------------------------------------------------------------------

QUERIES = ('(a) limit=1000', '(b) deep page', '(c) bbox ~1%', '(d) item by id',
           '(e) CQL2 filter')


def request_for(name: str, n: int, i: int) -> tuple[str, dict]:
    """Request i of a query: (path under the collection, params), different for every i."""
    rng = random.Random(zlib.crc32(f'{n} {name} {i}'.encode()))
    if name.startswith('(a)'):
        return 'items', {'limit': 1000, 'offset': rng.randrange(0, 1000)}
    if name.startswith('(b)'):
        return 'items', {'limit': 1000, 'offset': int(n * 0.9) - rng.randrange(0, n // 20 + 1)}
    if name.startswith('(c)'):
        x = rng.uniform(HYOGO[0], HYOGO[2] - BBOX_SPAN[0])
        y = rng.uniform(HYOGO[1], HYOGO[3] - BBOX_SPAN[1])
        return 'items', {'limit': 1000, 'bbox': f'{x:.5f},{y:.5f},{x + BBOX_SPAN[0]:.5f},'
                                                f'{y + BBOX_SPAN[1]:.5f}'}
    if name.startswith('(d)'):
        return f'items/{rng.randrange(1, n + 1)}', {}
    # No filter-lang: each server's default text language (pygeoapi 0.21 rejects cql2-text).
    return 'items', {'limit': 1000,
                     'filter': f"capacity > {rng.randrange(300, 700)} AND name LIKE '%小学校%'"}


def once(url, params):
    import requests
    t = time.perf_counter()
    r = requests.get(url, params=params, timeout=900,
                     headers={'Connection': 'close'})
    body = r.content
    return (time.perf_counter() - t) * 1000, r.status_code, body


def p95(values):
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def measure(targets: dict, n: int, runs: int) -> dict:
    """{(system, query): (median, p95, returned, failures)}; systems interleaved."""
    out = {}
    for name in QUERIES:
        samples = {t: [] for t in targets}
        returned, failed = {}, {t: 0 for t in targets}
        for i in range(runs + 1):
            path, params = request_for(name, n, i)
            for system, (base, cid) in targets.items():
                ms, status, body = once(f'{base}/collections/{cid}/{path}', params)
                if status != 200:
                    failed[system] += 1
                    continue
                if i:
                    samples[system].append(ms)
                try:
                    doc = json.loads(body)
                    returned[system] = doc.get('numberReturned', len(doc.get('features', [])))\
                        if 'features' in doc else doc.get('id')
                except ValueError:
                    returned[system] = '?'
        for system, v in samples.items():
            out[(system, name)] = (statistics.median(v) if v else None,
                                   p95(v) if v else None, returned.get(system), failed[system])
    return out


def print_table(kind, n, systems, res, runs):
    print(f'\n{kind} ({n:,} rows), HTTP, 2 workers each, {runs} requests per cell after a '
          'warm-up, every request different; median / p95 ms (returned):')
    print(f'  {"query":17}' + ''.join(f' {s:>24}' for s in systems))
    for name in QUERIES:
        cells = []
        for s in systems:
            med, top, ret, failed = res.get((s, name), (None, None, None, 0))
            cells.append(f'{med:8.1f} / {top:7.1f} ({ret})' if med is not None
                         else f'failed {failed}x' if failed else '-')
        print(f'  {name:17}' + ''.join(f' {c:>24}' for c in cells), flush=True)
    ours = 'renkei/PostGIS'
    for other in [s for s in systems if s != ours]:
        ratios = []
        for name in QUERIES:
            a, b = res.get((ours, name), (None,))[0], res.get((other, name), (None,))[0]
            ratios.append(f'{name[:3]} {b / a:6.1f}x' if a and b else f'{name[:3]}      -')
        print(f'  {other} / {ours} (median): ' + '  '.join(ratios))


def worker_rss(master_pid: int) -> float:
    """Peak RSS (VmHWM, MiB) of a gunicorn master's workers."""
    try:
        with open(f'/proc/{master_pid}/task/{master_pid}/children') as fh:
            pids = [int(p) for p in fh.read().split()]
    except OSError:
        return float('nan')
    peak = 0.0
    for pid in pids:
        with open(f'/proc/{pid}/status') as fh:
            peak = max([peak] + [int(line.split()[1]) / 1024 for line in fh
                                 if line.startswith('VmHWM')])
    return peak


# -- hazard lookup, search and wrk ----------------------------------------------------------

def hazards_bench(server: str, db: str, tables: dict, runs: int) -> None:
    """The two queries of /api/hazards on the bench tables, in process (ogcapi.hazards_pg):
    polygons covering a point of the 900k-polygon layer, and the 5 nearest of the 5M points
    (KNN, then metres on the sphere), in one transaction as a lookup makes them."""
    from ogcapi import hazards_pg
    from store.db import make_engine
    engine = make_engine(db_url(server, db))
    rng = random.Random(15)
    times, hits = [], 0
    try:
        for i in range(runs + 1):
            lat, lon = rng.uniform(HYOGO[1], HYOGO[3]), rng.uniform(HYOGO[0], HYOGO[2])
            t = time.perf_counter()
            with engine.connect() as conn:
                found = hazards_pg.covering(conn, tables['polygons'], lat, lon,
                                            {'depth_rank', 'depth_range', 'river'})
                near = hazards_pg.nearest(conn, tables['points'], lat, lon, (), [], 5, 0.64)
            if i:
                times.append((time.perf_counter() - t) * 1000)
                hits += bool(found)
            assert len(near) == 5
    finally:
        engine.dispose()
    print(f'\nhazard lookup (covering polygons + 5 nearest points), in process, {runs} random '
          f'points in Hyogo: p50 {statistics.median(times):.2f} ms, p95 {p95(times):.2f} ms '
          f'({hits} points inside a polygon)')


def search_bench(server: str, db: str, count: int, runs: int) -> None:
    """store.search over ``count`` synthetic datasets in PostgreSQL (bench/search_bench's
    corpus and queries)."""
    from sqlalchemy import text
    from store.db import make_engine
    try:
        from bench import search_bench as sb
        from store.search import SearchIndex
        engine = make_engine(db_url(server, db).replace(f'%3D{SCHEMA},', '%3Dsearch_bench,'))
        with engine.begin() as conn:
            conn.execute(text('DROP SCHEMA IF EXISTS search_bench CASCADE'))
            conn.execute(text('CREATE SCHEMA search_bench'))
        from store.base import Base
        Base.metadata.create_all(engine)
        index = SearchIndex(engine)
        corpus = sb.load_corpus(count)
        built = sb.build(index, corpus)
        print(f'\nsearch, {count:,} datasets in PostgreSQL (indexed in {built:.0f} s), '
              f'ms per query over {runs} runs each:')
        for label, queries in (('1 char', ['市', '図', '川']), ('2 chars', ['避難', '公園', '人口']),
                               ('4 chars', ['ハザード', '避難施設', '観光統計'])):
            times = sb.time_kind(index, queries, runs)
            print(f'  {label:8} p50 {statistics.median(times):7.2f}   p95 {p95(times):7.2f}')
        engine.dispose()
    except Exception as err:   # noqa: BLE001 - reported, the rest of the run goes on
        print(f'\nsearch in PostgreSQL: not measured ({type(err).__name__}: {str(err)[:200]})')


def wrk_two_servers(layers, pg, env, server, db, seconds: int) -> None:
    wrk = shutil.which('wrk')
    if not wrk:
        print('\nwrk: not installed (apt-get install wrk)')
        return
    import psycopg
    pool, overflow = 2, 2
    env = dict(env, RENKEI_DB_POOL_SIZE=str(pool), RENKEI_DB_MAX_OVERFLOW=str(overflow))
    # Named, so the count is of these servers' connections only.
    pg = pg + '&application_name=renkei-wrk-bench'
    servers = [start_renkei('postgis', layers, pg, env) for _ in range(2)]
    budget = len(servers) * 2 * (pool + overflow)
    n = layers['points']['n']
    script = os.path.join(tempfile.mkdtemp(prefix='renkei-wrk-'), 'mix.lua')
    paths = [f'/ogcapi/collections/points/items?limit=1000',
             f'/ogcapi/collections/points/items?limit=1000&bbox=134.80,34.70,134.922,34.853',
             f'/ogcapi/collections/points/items/{n // 2}']
    with open(script, 'w') as fh:
        fh.write('local paths = {' + ', '.join(json.dumps(p) for p in paths) + '}\n'
                 'local i = 0\nrequest = function()\n  i = i % 3 + 1\n'
                 '  return wrk.format("GET", paths[i])\nend\n')
    peak, done = [0], threading.Event()

    def sample():
        with psycopg.connect(server, autocommit=True) as con:
            while not done.is_set():
                c = con.execute('SELECT count(*) FROM pg_stat_activity WHERE datname = %s'
                                " AND application_name = 'renkei-wrk-bench'",
                                (db,)).fetchone()[0]
                peak[0] = max(peak[0], c)
                time.sleep(0.05)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        runs = [subprocess.Popen([wrk, '-t1', '-c4', f'-d{seconds}s', '-s', script,
                                  base.removesuffix('/ogcapi')], stdout=subprocess.PIPE,
                                 text=True) for _, base in servers]
        outs = [r.communicate()[0] for r in runs]
        rss = max(worker_rss(proc.pid) for proc, _ in servers)
    finally:
        done.set()
        watcher.join(5)
        for proc, _ in servers:
            stop(proc)
    print(f'\nwrk, 2 renkei/PostGIS servers × 2 workers, {seconds} s each, 4 connections each, '
          'mix of (a)/(c)/(d) on points:')
    for i, out in enumerate(outs):
        keep = [ln for ln in out.splitlines() if 'Requests/sec' in ln or 'Latency' in ln
                or 'requests in' in ln or 'Non-2xx' in ln]
        print(f'  server {i + 1}: ' + ' | '.join(ln.strip() for ln in keep))
    print(f'  PostgreSQL connections: peak {peak[0]} (budget {budget} = 2 servers × 2 workers'
          f' × (pool {pool} + overflow {overflow})); peak worker RSS {rss:.0f} MiB')


# -- main -----------------------------------------------------------------------------------

def http_section(args, layers: dict, tables: dict, pg: str, env: dict) -> None:
    """(a)–(e) over HTTP on every system, both layers; peak worker RSS of ours."""
    procs = {}
    tmp = tempfile.mkdtemp(prefix='renkei-scale-')
    try:
        procs['renkei/GeoPackage'] = start_renkei('gpkg', layers, pg, env)
        procs['renkei/PostGIS'] = start_renkei('postgis', layers, pg, env)
        if args.stock_venv:
            procs['pygeoapi'] = start_stock(args.stock_venv, layers, args.server, args.db, tmp)
        if args.tipg_venv:
            procs['tipg'] = start_tipg(args.tipg_venv, args.server, args.db)
        print(f'\nsystems: {", ".join(procs)}' + ('' if args.stock_venv else
              '; pygeoapi stock providers not measured (give --stock-venv)')
              + ('' if args.tipg_venv else '; tipg not measured (give --tipg-venv)'))
        for kind, layer in layers.items():
            targets = {'renkei/GeoPackage': (procs['renkei/GeoPackage'][1], kind),
                       'renkei/PostGIS': (procs['renkei/PostGIS'][1], kind)}
            if 'pygeoapi' in procs:
                targets['pygeoapi PostgreSQL'] = (procs['pygeoapi'][1], f'{kind}-pg')
                targets['pygeoapi SQLiteGPKG'] = (procs['pygeoapi'][1], f'{kind}-gpkg')
            if 'tipg' in procs:
                targets['tipg'] = (procs['tipg'][1], f'{SCHEMA}.{tables[kind]}')
            res = measure(targets, layer['n'], args.runs)
            print_table(kind, layer['n'], list(targets), res, args.runs)
        for name in ('renkei/GeoPackage', 'renkei/PostGIS'):
            print(f'  peak worker RSS, {name}: {worker_rss(procs[name][0].pid):.0f} MiB')
    finally:
        for proc, _ in procs.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--points', type=int, default=5_000_000)
    ap.add_argument('--polygons', type=int, default=900_000)
    ap.add_argument('--runs', type=int, default=20)
    ap.add_argument('--server', default=os.environ.get(
        'RENKEI_BENCH_SERVER', 'postgresql://postgres@127.0.0.1:5432/postgres'),
        help='a maintenance database of the PostgreSQL server to use')
    ap.add_argument('--db', default='renkei_scale_bench')
    ap.add_argument('--drop-db', action='store_true', help='drop the bench database at the end')
    ap.add_argument('--stock-venv', help="venv with pygeoapi 0.21 (see above)")
    ap.add_argument('--tipg-venv', help='venv with tipg and uvicorn (see above)')
    ap.add_argument('--search', type=int, default=100_000, help='datasets; 0: skip')
    ap.add_argument('--wrk-seconds', type=int, default=30, help='0: skip')
    ap.add_argument('--sections', default='http,hazards,search,wrk',
                    help='which parts to run (comma-separated)')
    args = ap.parse_args()
    sections = set(args.sections.split(','))
    sys.path.insert(0, ROOT)
    sizes = {'points': args.points, 'polygons': args.polygons}
    files = data_files(sizes)
    ensure_database(args.server, args.db)
    tables = load_tables(args.server, args.db, files, sizes)
    layers = {k: {'gpkg': files[k], 'table': tables[k], 'n': sizes[k]} for k in sizes}
    pg = db_url(args.server, args.db)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    if 'http' in sections:
        http_section(args, layers, tables, pg, env)
    if 'hazards' in sections:
        hazards_bench(args.server, args.db, tables, max(args.runs, 100))
    if args.search and 'search' in sections:
        search_bench(args.server, args.db, args.search, args.runs)
    if args.wrk_seconds and 'wrk' in sections:
        wrk_two_servers(layers, pg, env, args.server, args.db, args.wrk_seconds)
    if args.drop_db:
        import psycopg
        with psycopg.connect(args.server, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
