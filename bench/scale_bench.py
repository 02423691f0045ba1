"""Issue 14's scale benchmark: renkei on GeoPackage and on PostGIS against pygeoapi's stock
PostgreSQL and SQLiteGPKG providers and tipg, on the same data (prints figures; never a test).

Data (synthetic): --points (5,000,000) points and --polygons (900,000) A31-like polygons in
Hyogo's bbox, ~10 attributes with Japanese text, generated inside PostgreSQL (generate_series,
random() under a fixed seed) as tables of the version layout (notes/PGMODE.md) in the database
--db (schema `bench`; kept for the next run, --drop-db to remove it), then exported with their
fids to GeoPackages in --data-dir by GDAL (Debian's python3-gdal). Prepare it at nice 19 with
--prepare-only, then measure under the bench lock.

Through HTTP, 2 workers per server, median and p95 of --runs (one warm-up first), the systems
interleaved request by request, and every request different from the others (offset, bbox, id
and filter constant vary) so that no cache answers the same question twice:
  (a) items?limit=1000   (b) a deep page: limit=1000&offset=90 %   (c) bbox holding ~1 %
  (d) one item by id     (e) filter=capacity > N AND name LIKE '%小学校%' (CQL2 text)
The section first prints PostgreSQL's shared_buffers beside the size of each layer's
relations: a bbox page reads a few hundred pages at random, so its time depends on where they
are. --prewarm reads each layer's relations into shared_buffers (pg_prewarm) and its
GeoPackage into the page cache before its queries, for every system alike; without it, pages
the machine dropped since they were last read come from the disk.
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


# -- data -----------------------------------------------------------------------------------

def _array(values) -> str:
    """SQL: a text array literal (Japanese included)."""
    return '(ARRAY[' + ', '.join("'" + v.replace("'", "''") + "'" for v in values) + '])'


def _choice(values) -> str:
    """SQL: one of `values` at random."""
    return f'{_array(values)}[1 + floor(random() * {len(values)})::int]'


def _generate_sql(kind: str, table: str, n: int) -> str:
    """One CREATE TABLE … AS of the version layout (fid, geom, then the ~10 attributes):
    uniform points, or A31-like cells of ~100–300 m (6 vertices at sorted random angles)."""
    (x0, y0, x1, y1) = HYOGO
    if kind == 'points':
        geom = 'ST_SetSRID(ST_MakePoint(x, y), 4326)::geometry(Point, 4326)'
    else:
        geom = ('(SELECT ST_Multi(ST_MakePolygon(ST_MakeLine(pts || pts[1])))'
                '::geometry(MultiPolygon, 4326) FROM (SELECT array_agg(ST_SetSRID(ST_MakePoint('
                'x + r * cos(a), y + r * sin(a)), 4326) ORDER BY a) AS pts FROM (SELECT '
                'random() * 2 * pi() AS a FROM generate_series(1, 6)) angles) ring)')
    return f"""
        CREATE TEMPORARY TABLE "{table}" AS
        SELECT i::bigint AS fid, {geom} AS geom,
               c || '立第' || (i - 1) || k AS name, k AS category, c AS city,
               '兵庫県' || c || '本町' || ((i - 1) % 9 + 1) || '丁目' || ((i - 1) % 30 + 1)
                   || '番' AS address,
               river, rank::bigint AS depth_rank, {_array(DEPTHS)}[rank]
                   AS depth_range,
               floor(random() * 2000)::bigint AS capacity,
               round((50 + random() * 4950)::numeric, 1)::double precision AS area_m2,
               (1990 + floor(random() * 35)::int) || '-04-01' AS designated_on,
               random() < 0.5 AS barrier_free
        FROM (SELECT i, {_choice(CITIES)} AS c, {_choice(KINDS)} AS k,
                     {_choice(RIVERS)} AS river, 1 + floor(random() * 6)::int AS rank,
                     {x0} + random() * {x1 - x0} AS x, {y0} + random() * {y1 - y0} AS y,
                     0.0005 + random() * 0.001 AS r
              FROM generate_series(1, {int(n)}) i OFFSET 0) s
        ORDER BY i"""


def generate_tables(server: str, db: str, sizes: dict) -> dict:
    """kind -> version table (store.features_pg's layout), generated inside PostgreSQL with
    generate_series and random() under a fixed seed: about a minute for 5M points, where
    generating in Python and loading took 23. The rows go into a temporary table in source
    order, then into the version table the way the writer stores them (write_version_table:
    spatial order, key, GiST index, grid, and the polygons' stored Feature texts). Kept for
    the next run while its count matches, it lies in that order (a table of source order has
    fid perfectly correlated with its storage) and it has its grid.
    The backend doing it runs at nice 19 when it is on this machine (a measurement under the
    bench lock keeps the cores)."""
    import psycopg
    from store import point_grid
    from store.features_pg import staging_table, table_name, vacuum, write_version_table
    tables = {}
    with psycopg.connect(db_url(server, db), autocommit=True) as con:
        try:
            os.setpriority(os.PRIO_PROCESS,
                           con.execute('SELECT pg_backend_pid()').fetchone()[0], 19)
        except OSError:   # another machine's server, or not ours to renice
            pass
        for kind, n in sizes.items():
            table = table_name(f'bench-{kind}-{n}', 1)
            found = con.execute('SELECT to_regclass(%s)', (f'"{table}"',)).fetchone()[0]
            if found and con.execute(f'SELECT max(fid) FROM "{table}"').fetchone()[0] == n \
                    and con.execute("SELECT abs(correlation) < 0.5 FROM pg_stats WHERE "
                                    "tablename = %s AND attname = 'fid'",
                                    (table,)).fetchone() == (True,) \
                    and con.execute(   # written with its grid (points, and polygons since)
                        'SELECT to_regclass(%s)', (f'"{point_grid.companions(table)[1]}"',)
                    ).fetchone()[0]:
                tables[kind] = table
                continue
            t = time.perf_counter()
            con.execute(f'DROP TABLE IF EXISTS "{table}"')
            con.execute('SET max_parallel_workers_per_gather = 0')   # one random() sequence
            con.execute('SELECT setseed(0.14)')
            with con.transaction():
                con.execute(_generate_sql(kind, staging_table(table), n))
                write_version_table(con.execute, staging_table(table), table)
            vacuum(con.execute, table)
            print(f'generated {kind}: {n:,} rows in PostgreSQL ({table}) in '
                  f'{time.perf_counter() - t:.0f} s', flush=True)
            tables[kind] = table
    return tables


def export_geopackages(server: str, db: str, tables: dict, sizes: dict, folder: str) -> dict:
    """kind -> GeoPackage holding the same rows (same fid), for renkei/GeoPackage and the
    stock SQLiteGPKG provider: GDAL's VectorTranslate (ogr2ogr) from PostGIS, with Debian's
    python3-gdal (`apt-get install python3-gdal`), at nice 19."""
    from urllib.parse import urlsplit
    os.makedirs(folder, exist_ok=True)
    u = urlsplit(server)
    src = (f'PG:host={u.hostname} port={u.port or 5432} dbname={db} '
           f'user={u.username or "postgres"} active_schema={SCHEMA}')
    out = {}
    for kind, table in tables.items():
        path = os.path.join(folder, f'scale_{kind}_{sizes[kind]}.gpkg')
        if not os.path.exists(path):
            t = time.perf_counter()
            tmp = path[:-len('.gpkg')] + '.writing.gpkg'
            if os.path.exists(tmp):
                os.unlink(tmp)
            script = ('import sys\nfrom osgeo import gdal\ngdal.UseExceptions()\n'
                      'gdal.SetConfigOption("OGR_SQLITE_SYNCHRONOUS", "OFF")\n'
                      'gdal.VectorTranslate(sys.argv[2], sys.argv[1], options=['
                      '"-f", "GPKG", sys.argv[3], "-nln", "features", "-preserve_fid", '
                      '"-lco", "GEOMETRY_NAME=geom", "-lco", "FID=fid", "-gt", "100000"])\n')
            subprocess.run(['nice', '-n', '19', '/usr/bin/python3', '-c', script, src, tmp,
                            table], check=True)
            os.replace(tmp, path)
            print(f'exported {kind} to {path} in {time.perf_counter() - t:.0f} s', flush=True)
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


def once(url, params, timeout=900):
    """(ms, status, body); status None when the request took longer than `timeout` s."""
    import requests
    t = time.perf_counter()
    try:
        r = requests.get(url, params=params, timeout=timeout,
                         headers={'Connection': 'close'})
        body = r.content
    except requests.Timeout:
        return (time.perf_counter() - t) * 1000, None, b''
    return (time.perf_counter() - t) * 1000, r.status_code, body


def cancel_queries(server: str, db: str) -> None:
    """Cancel what a timed-out request left running in the bench database (the stock servers
    would otherwise go on with it and slow the next requests of every system)."""
    import psycopg
    with psycopg.connect(server, autocommit=True) as con:
        con.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND state = 'active' AND pid <> pg_backend_pid()", (db,))


def p95(values):
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


STOCK = ('pygeoapi PostgreSQL', 'pygeoapi SQLiteGPKG', 'tipg')


def measure(targets: dict, n: int, runs: int, stock_runs: int = 5, stock_timeout: float = 30,
            server: str = '', db: str = '') -> dict:
    """{(system, query): (median, p95, returned, failures, timed out)}; systems interleaved.
    The stock systems get `stock_runs` requests a cell and `stock_timeout` s each: the first
    request over it ends that cell (shown as "> T s")."""
    out = {}
    for name in QUERIES:
        samples = {t: [] for t in targets}
        returned, failed = {}, {t: 0 for t in targets}
        timed_out = set()
        for i in range(runs + 1):
            path, params = request_for(name, n, i)
            for system, (base, cid) in targets.items():
                stock = system in STOCK
                if system in timed_out or (stock and i > stock_runs):
                    continue
                ms, status, body = once(f'{base}/collections/{cid}/{path}', params,
                                        stock_timeout if stock else 900)
                if status is None:
                    timed_out.add(system)
                    if server:
                        cancel_queries(server, db)
                    continue
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
                                   p95(v) if v else None, returned.get(system), failed[system],
                                   stock_timeout if system in timed_out else None)
    return out


def print_table(kind, n, systems, res, runs, stock_runs=None):
    print(f'\n{kind} ({n:,} rows), HTTP, 2 workers each, {runs} requests per cell after a '
          f'warm-up ({stock_runs} for pygeoapi and tipg), every request different; '
          'median / p95 ms (returned):')
    print(f'  {"query":17}' + ''.join(f' {s:>24}' for s in systems))
    for name in QUERIES:
        cells = []
        for s in systems:
            med, top, ret, failed, over = res.get((s, name), (None, None, None, 0, None))
            cells.append(f'> {over:g} s'
                         if over is not None else
                         f'{med:8.1f} / {top:7.1f} ({ret})' if med is not None
                         else f'failed {failed}x' if failed else '-')
        print(f'  {name:17}' + ''.join(f' {c:>24}' for c in cells), flush=True)
    ours = 'renkei/PostGIS'
    for other in [s for s in systems if s != ours]:
        ratios = []
        for name in QUERIES:
            a, b, over = (res.get((ours, name), (None,))[0], res.get((other, name), (None,))[0],
                          res.get((other, name), (None,) * 5)[4])
            ratios.append(f'{name[:3]} >{over * 1000 / a:6.1f}x' if a and over is not None
                          else f'{name[:3]} {b / a:6.1f}x' if a and b else f'{name[:3]}      -')
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
            times, cpu, cold, _ = sb.time_kind(index, queries, runs)
            print(f'  {label:8} p50 {statistics.median(times):7.2f}   p95 {p95(times):7.2f}'
                  f'   (CPU p50 {statistics.median(cpu):6.2f}; first, no term cached: p50 '
                  f'{statistics.median(cold):7.2f})')
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

def _relations(con, table: str) -> list[tuple[str, int]]:
    """(name, bytes) of a version table, its grid's companions and all their indexes."""
    from store import point_grid
    names = [table, *point_grid.companions(table)]
    return con.execute(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c WHERE c.oid IN ("
        "SELECT to_regclass(quote_ident(n)) FROM unnest(%s::text[]) n UNION "
        "SELECT i.indexrelid FROM pg_index i WHERE i.indrelid IN ("
        "SELECT to_regclass(quote_ident(n)) FROM unnest(%s::text[]) n)) ORDER BY 1",
        (names, names)).fetchall()


def _shared_buffers(con) -> int:
    return con.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]


def memory_report(server: str, db: str, tables: dict) -> dict:
    """Print PostgreSQL's shared_buffers beside the size of each layer's relations: a bbox
    page or count reads a few hundred 8 kB pages at random, and what they cost depends on
    where those pages are (PostgreSQL's buffers, the OS page cache, the disk)."""
    import psycopg
    with psycopg.connect(db_url(server, db)) as con:
        buffers = _shared_buffers(con)
        sizes = {kind: sum(n for _, n in _relations(con, t)) for kind, t in tables.items()}
    print(f'\nPostgreSQL shared_buffers {buffers / 2**20:,.0f} MiB; relations of each layer '
          '(version table, grid companions, indexes): ' +
          ', '.join(f'{kind} {n / 2**20:,.0f} MiB' for kind, n in sizes.items()))
    return {'shared_buffers': buffers, **sizes}


def prewarm(server: str, db: str, table: str, gpkg: str | None) -> None:
    """--prewarm: a layer's relations into PostgreSQL's buffers (pg_prewarm, 'buffer') and its
    GeoPackage into the OS page cache, before its queries, for every system alike. Without
    it the figures include whatever the machine has evicted since the data was last read
    (this VM reclaims idle page cache, so a page read after minutes comes from the disk)."""
    import psycopg
    with psycopg.connect(db_url(server, db), autocommit=True) as con:
        con.execute('CREATE EXTENSION IF NOT EXISTS pg_prewarm')
        rels, buffers = _relations(con, table), _shared_buffers(con)
        t = time.perf_counter()
        for name, _ in rels:
            con.execute("SELECT pg_prewarm(to_regclass(quote_ident(%s)), 'buffer')", (name,))
        total = sum(n for _, n in rels)
    if gpkg:
        with open(gpkg, 'rb') as fh:
            while fh.read(1 << 24):
                pass
    over = ' (more than fit: the rest is in the page cache while the machine keeps it)'
    print(f'prewarmed {table}: {total / 2**20:,.0f} MiB into shared_buffers of '
          f'{buffers / 2**20:,.0f} MiB' + (over if total > buffers else '') +
          (', and its GeoPackage into the page cache' if gpkg else '') +
          f' in {time.perf_counter() - t:.1f} s', flush=True)


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
        memory_report(args.server, args.db, tables)
        for kind, layer in layers.items():
            if args.prewarm:
                prewarm(args.server, args.db, tables[kind], layer['gpkg'])
            targets = {'renkei/GeoPackage': (procs['renkei/GeoPackage'][1], kind),
                       'renkei/PostGIS': (procs['renkei/PostGIS'][1], kind)}
            if 'pygeoapi' in procs:
                targets['pygeoapi PostgreSQL'] = (procs['pygeoapi'][1], f'{kind}-pg')
                targets['pygeoapi SQLiteGPKG'] = (procs['pygeoapi'][1], f'{kind}-gpkg')
            if 'tipg' in procs:
                targets['tipg'] = (procs['tipg'][1], f'{SCHEMA}.{tables[kind]}')
            res = measure(targets, layer['n'], args.runs, args.stock_runs, args.stock_timeout,
                          args.server, args.db)
            print_table(kind, layer['n'], list(targets), res, args.runs, args.stock_runs)
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
    ap.add_argument('--data-dir', default=OUT, help='where the GeoPackages are kept')
    ap.add_argument('--prepare-only', action='store_true',
                    help='generate the tables and GeoPackages, measure nothing (run it at '
                         'nice 19 outside the bench lock)')
    ap.add_argument('--stock-runs', type=int, default=5,
                    help='requests per cell for pygeoapi and tipg (their deep pages are slow)')
    ap.add_argument('--stock-timeout', type=float, default=30.0,
                    help='seconds a stock request may take; a cell that hits it shows "> T s"')
    ap.add_argument('--stock-venv', help="venv with pygeoapi 0.21 (see above)")
    ap.add_argument('--tipg-venv', help='venv with tipg and uvicorn (see above)')
    ap.add_argument('--search', type=int, default=100_000, help='datasets; 0: skip')
    ap.add_argument('--wrk-seconds', type=int, default=30, help='0: skip')
    ap.add_argument('--prewarm', action='store_true',
                    help="before each layer's queries, read its PostgreSQL relations into "
                         "shared_buffers (pg_prewarm) and its GeoPackage into the page cache")
    ap.add_argument('--sections', default='http,hazards,search,wrk',
                    help='which parts to run (comma-separated)')
    args = ap.parse_args()
    sections = set(args.sections.split(','))
    sys.path.insert(0, ROOT)
    sizes = {'points': args.points, 'polygons': args.polygons}
    ensure_database(args.server, args.db)
    tables = generate_tables(args.server, args.db, sizes)
    # Only the HTTP section reads the GeoPackages.
    files = export_geopackages(args.server, args.db, tables, sizes, args.data_dir) \
        if 'http' in sections or args.prepare_only else {}
    if args.prepare_only:
        return 0
    layers = {k: {'gpkg': files.get(k), 'table': tables[k], 'n': sizes[k]} for k in sizes}
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
