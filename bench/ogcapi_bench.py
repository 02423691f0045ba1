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

Issue 17: each query in two modes, interleaved request by request with pygeoapi 0.21's stock
SQLiteGPKG and OGR (paging) providers over the same files: warm (the same URL again) and cold
(every request differs slightly: offset, bbox, item id, filter constant, so no cache answers).
The stock providers run in their own environment, which needs a Python whose sqlite3 can load
SpatiaLite and GDAL's bindings (Debian's):
    apt-get install libsqlite3-mod-spatialite python3-gdal python3-venv
    /usr/bin/python3 -m venv --system-site-packages VENV && VENV/bin/pip install pygeoapi==0.21.0 gunicorn
    PYTHONPATH=. python bench/ogcapi_bench.py --stock-venv VENV [--runs 15] [--stock-runs 5]

    PYTHONPATH=. python bench/ogcapi_bench.py [--runs 20] [--wrk-seconds 30]

renkei is served as `renkei serve` serves it (--app full, the default): the whole app of
catalog.app.create_app over a catalogue publishing the two files, so every per-request hook counts
(sessions, sign-in, CSRF, rate limits (counting, with a limit the bench never reaches),
metering, security headers, access labels: a `restricted` collection of the same points is
checked to answer 404); --app bare serves the OGC API blueprint alone, as before issue 17's (d)
work. The client is a socket writing the request bytes (one(), for every server alike): a client
library's own CPU, on a machine of 2 cores, was counted into the wall times. --queries d runs
only (d), e.g. for a quick look at the item path:
    PYTHONPATH=. python bench/ogcapi_bench.py --stock-venv VENV --queries d --runs 100 \
        --stock-runs 30 --wrk-seconds 0 --data-dir /somewhere/with/space

Beside each (d) request, two constant answers on renkei's worker say what no item answer can
beat: "HTTP alone" (a bare Flask route: client, connection, gunicorn, Flask) and, with
--app full, "platform alone" (the same constant through every hook an item passes: sign-in,
CSRF, rate limits, metering, security headers, CORS). The floor section prints the best stock
provider's time over each: the ceiling of (d)'s ratio on this machine and server.

Same interpreter: the stock venv runs Debian's Python (built with PGO and LTO); a Python built
without them (pyenv's default) runs renkei's Python code slower, and the ratios would count
that against renkei. The first line printed says which Python each server runs on; for an even
comparison, serve renkei from a venv of the same Python:
    /usr/bin/python3 -m venv RVENV && RVENV/bin/pip install -e .
    PYTHONPATH=. python bench/ogcapi_bench.py --stock-venv VENV --renkei-venv RVENV --prewarm
--prewarm reads each set's files into the page cache first: on a VM that drops idle pages, a
cold run would otherwise time the disk for whichever server reads a page first.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get('RENKEI_BENCH_DATA') or os.path.join(ROOT, 'bench', 'out')
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


def bare_app():
    """App factory for gunicorn (--app bare): our OGC API blueprint alone over the two files
    (RENKEI_BENCH_* env), without the rest of the app's per-request work."""
    from flask import Flask
    from ogcapi.blueprint import register_ogcapi
    from ogcapi.api import OGCAPI
    files = json.loads(os.environ['RENKEI_BENCH_FILES'])
    cols = [{'id': kind, 'title': f'{kind}（ベンチマーク）', 'bbox': list(HYOGO),
             'path': path, 'layer': 'features',
             'count': json.loads(os.environ['RENKEI_BENCH_SETS'])[kind]}
            for kind, path in files.items()]
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(os.environ['RENKEI_BENCH_URL'], lambda: cols, lambda: '1'))
    # What HTTP itself costs on this worker (client, connection, gunicorn, Flask): a route
    # that answers a small constant GeoJSON Feature, measured beside (d).
    ping = json.dumps({'type': 'Feature', 'id': 1, 'geometry': None, 'properties': {}})
    app.add_url_rule('/ping', 'ping', lambda: (ping, 200, {'Content-Type': 'application/geo+json'}))
    return app


def bench_catalogue(data_dir, files):
    """A data dir whose catalogue (SQLite) publishes the two files as collections `points` and
    `polygons` (public), and the points once more as `restricted`, a dataset only its
    organization's members may read, which an anonymous client must get 404 from."""
    from store.db import Collection, Dataset, Store
    store = Store(data_dir)
    with store.session() as s, s.begin():
        if s.get(Dataset, 'bench-points') is not None:
            return
        for cid, path, level in [*((k, p, 'public') for k, p in files.items()),
                                 ('restricted', files['points'], 'organization')]:
            s.add(Dataset(id=f'bench-{cid}', source_name='bench', remote_id=cid, name=cid,
                          title=f'{cid}（ベンチマーク）', organization_id='bench',
                          access_level=level))
            s.add(Collection(id=cid, dataset_id=f'bench-{cid}', resource_id=cid,
                             title=f'{cid}（ベンチマーク）', path=path, layer='features',
                             feature_count=SETS.get(cid, SETS['points']), bbox=list(HYOGO)))
        Store.bump_version(s)
    store.engine.dispose()


def full_app():
    """App factory for gunicorn (--app full, the default): the whole renkei app
    (catalog.app.create_app: sessions, sign-in, CSRF, rate limits, metering, security headers,
    access labels) over bench_catalogue's data dir, as `renkei serve` runs it. /bare/ping is a
    bare Flask app beside it on the same worker: what HTTP itself costs."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from catalog.app import create_app
    app = create_app(os.environ['RENKEI_BENCH_DIR'],
                     base_url=os.environ['RENKEI_BENCH_URL'].rsplit('/', 1)[0])
    bare = Flask('bare')
    ping = json.dumps({'type': 'Feature', 'id': 1, 'geometry': None, 'properties': {}})
    bare.add_url_rule('/ping', 'ping',
                      lambda: (ping, 200, {'Content-Type': 'application/geo+json'}))
    # The same constant through every hook an item goes through (the app's and the OGC API
    # blueprint's: its endpoint name puts it in that blueprint): what the platform's
    # per-request work costs beside HTTP alone, with no lookup and no serialisation.
    app.add_url_rule('/ogcapi/collections/<cid>/constant/<iid>', 'ogcapi.bench_constant',
                     lambda cid, iid: (ping, 200, {'Content-Type': 'application/geo+json'}))
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {'/bare': bare})
    return app


def gunicorn(app, port, env, workers=1, bindir=None):
    exe = shutil.which('gunicorn', path=bindir or os.path.dirname(sys.executable))
    proc = subprocess.Popen([exe, '-w', str(workers), '-b', f'127.0.0.1:{port}',
                             '--log-level', 'warning', '--timeout', '600', app], env=env)
    import requests
    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=30)
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


def item_id(n):
    return 543210 if n > 543210 else 54321 if n > 54321 else n // 2


def queries(n, only=None):
    deep = 900_000 if n == 1_000_000 else int(n * 0.9)
    out = {
        '(a) limit=1000': ('items', {'limit': 1000}),
        f'(b) offset={deep}': ('items', {'limit': 1000, 'offset': deep}),
        '(c) bbox ~1%': ('items', {'bbox': BBOX1, 'limit': 1000}),
        '(d) item by id': (f'items/{item_id(n)}', None),
        '(e) CQL2 filter': ('items', {'filter': CQL, 'limit': 1000}),
    }
    return {k: v for k, v in out.items() if not only or k[1] in only}


def cold_params(n, name, path, params, i):
    """Request i of a query in cold mode: (path, params) that no earlier request used."""
    rng = random.Random(zlib.crc32(f'{n} {name} {i}'.encode()))
    params = dict(params or {})
    if name.startswith('(a)'):
        params['offset'] = rng.randrange(1, 1000)
    elif name.startswith('(b)'):
        # Within the data: past its end every page is empty and costs nothing (the polygons'
        # deep offset is 180,000 of 200,000).
        room = n - params['offset'] - params['limit']
        params['offset'] += rng.randrange(1, max(2, min(50_000, room)))
    elif name.startswith('(c)'):
        dx, dy = rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        b = [float(v) for v in BBOX1.split(',')]
        params['bbox'] = ','.join(f'{v:.5f}' for v in (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy))
    elif name.startswith('(d)'):
        path = f'items/{rng.randrange(1, n + 1)}'
    elif name.startswith('(e)'):
        params['filter'] = f"capacity > {rng.randrange(300, 700)} AND name LIKE '%小学校%'"
    return path, params


def interpreters(renkei_bin, stock_venv):
    """Which Python each server runs on. The stock providers need Debian's (its sqlite3 loads
    SpatiaLite, GDAL's bindings are built for it), a build with PGO and LTO; a Python built
    without them (pyenv's default) runs the same code ~1.2-1.4x slower here, which the ratios
    would count against renkei. --renkei-venv gives renkei the same interpreter."""
    def which(python):
        out = subprocess.run([python, '-c', 'import os, sys; print(sys.version.split()[0], '
                              'os.path.realpath(getattr(sys, "_base_executable", '
                              'sys.executable)))'],
                             capture_output=True, text=True, check=True).stdout.split()
        return out[0], out[1]
    ours = which(os.path.join(renkei_bin, 'python') if renkei_bin else sys.executable)
    line = f'interpreters: renkei Python {ours[0]} ({ours[1]})'
    if stock_venv:
        theirs = which(os.path.join(stock_venv, 'bin', 'python'))
        line += f', stock Python {theirs[0]} ({theirs[1]})'
        line += (': the same' if ours == theirs else
                 ': not the same build, the ratios include the interpreters (--renkei-venv)')
    return line


def prewarm(paths) -> int:
    """Read files whole into the page cache (a VM that drops idle pages would otherwise make
    the first requests of a run read the disk); returns the bytes read."""
    total = 0
    for path in paths:
        with open(path, 'rb', buffering=0) as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total


def stock_copies(files):
    """The files the stock servers read: copies. pygeoapi's SQLiteGPKG provider writes to the
    file it opens (its set-up moves the file's mtime on every request), and to renkei a file
    whose identity changed is a new version: it would reopen it, re-read its schema and count
    its rows on the next request, as after a publish."""
    out = {}
    for kind, path in files.items():
        copy = path[:-len('.gpkg')] + '.stock.gpkg'
        if not os.path.exists(copy) or os.path.getsize(copy) != os.path.getsize(path):
            shutil.copyfile(path, copy)
        out[kind] = copy
    return out


def stock_server(files, venv, tmp):
    """pygeoapi 0.21 with its own SQLiteGPKG and OGR providers on the same files."""
    import yaml
    from ogcapi.api import build_config
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    cfg = build_config(base, [])
    cfg['server'].pop('templates', None)  # ours are not installed there
    for kind, path in files.items():
        common = {'type': 'collection', 'title': kind, 'description': 'stock', 'keywords': ['bench'],
                  'links': [], 'extents': {'spatial': {'bbox': list(HYOGO)}}}
        cfg['resources'][f'{kind}-sqlite'] = dict(common, providers=[{
            'type': 'feature', 'name': 'SQLiteGPKG', 'data': path, 'id_field': 'fid',
            'table': 'features'}])
        cfg['resources'][f'{kind}-ogr'] = dict(common, providers=[{
            'type': 'feature', 'name': 'OGR', 'id_field': 'fid', 'layer': 'features',
            'data': {'source_type': 'GPKG', 'source': path,
                     'source_capabilities': {'paging': True}}}])
    cfg_path, oas_path = os.path.join(tmp, 'stock.yml'), os.path.join(tmp, 'stock-openapi.yml')
    with open(cfg_path, 'w') as fh:
        yaml.safe_dump(cfg, fh, allow_unicode=True)
    env = dict(os.environ, PYGEOAPI_CONFIG=cfg_path, PYGEOAPI_OPENAPI=oas_path)
    env.pop('PYTHONPATH', None)
    subprocess.run([os.path.join(venv, 'bin', 'pygeoapi'), 'openapi', 'generate', cfg_path,
                    '--output-file', oas_path], env=env, check=True, capture_output=True)
    exe = os.path.join(venv, 'bin', 'gunicorn')
    proc = subprocess.Popen([exe, '-w', '1', '-b', f'127.0.0.1:{port}', '--log-level', 'warning',
                             '--timeout', '600', 'pygeoapi.flask_app:APP'], env=env,
                            # GDAL warns on every GPKG 1.4 open; pygeoapi logs to stdout, a
                            # warning for every item the OGR provider answers.
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import requests
    for _ in range(300):
        try:
            requests.get(f"{base}/", timeout=30)
            return proc, base
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError('stock pygeoapi did not start')


class Answer:
    def __init__(self, status, head, body):
        self.status_code, self.head, self.content = status, head, body

    def json(self):
        return json.loads(self.content)


def one(url, params):
    """One GET on a new connection, as lean a client as HTTP allows (a socket, the request
    bytes, read to the end): the wall time is the server's answer, not a client library's
    work (requests spent ~1 ms of this machine's CPU per call, shared with the server it
    measures, which flattened the ratio of a fast server to a slow one)."""
    from urllib.parse import urlencode, urlsplit
    u = urlsplit(url)
    target = u.path + ('?' + urlencode(params) if params else '')
    req = (f'GET {target} HTTP/1.0\r\nHost: {u.netloc}\r\n'
           'Connection: close\r\n\r\n').encode()
    import socket
    t = time.perf_counter()
    with socket.create_connection((u.hostname, u.port), timeout=600) as sock:
        sock.sendall(req)
        chunks = []
        while True:
            b = sock.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
    ms = (time.perf_counter() - t) * 1000
    raw = b''.join(chunks)
    head, _, body = raw.partition(b'\r\n\r\n')
    status = int(head.split(b' ', 2)[1])
    if status >= 400:
        raise RuntimeError(f'{url} {params}: {status} {body[:200]!r}')
    return ms, Answer(status, head, body)


def worker_pid(master):
    with open(f'/proc/{master}/task/{master}/children') as fh:
        return int(fh.read().split()[0])


def cpu_ms(pid):
    """CPU time a process has run so far (all its threads; ns resolution from schedstat): what
    a request cost the server, whatever else the machine is doing."""
    total = 0
    for task in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{task}/schedstat') as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            # A thread that ended since the listing: what it ran is lost to this sum, so a
            # server that starts threads per request is under-counted, never over-counted.
            pass
    return total / 1e6


def interleaved(targets, n, runs, stock_runs, references, only=None):
    """{(target, query, mode): (median ms, last doc, median server CPU ms)}; request by request
    across targets. targets: {name: (base URL, collection id, is stock, worker pid)};
    references: {name: URL} of constant answers on renkei's worker, each asked after every
    renkei (d) request (keys 'http' and 'platform' of the result)."""
    out = {}
    for name, (path, params) in queries(n, only).items():
        for mode in ('warm', 'cold'):
            samples = {t: [] for t in targets}
            cpu = {t: [] for t in targets}
            docs = {}
            for i in range(runs + 1):  # request 0 warms up (warm mode) / is dropped
                for t, (base, cid, is_stock, pid) in targets.items():
                    if is_stock and (i > stock_runs or name.startswith('(e)')):
                        continue
                    p, q = (path, params) if mode == 'warm' else cold_params(n, name, path, params, i)
                    before = cpu_ms(pid)
                    ms, r = one(f'{base}/collections/{cid}/{p}', q)
                    if i:
                        samples[t].append(ms)
                        cpu[t].append(cpu_ms(pid) - before)
                    docs[t] = r.json()
                    if t == 'renkei' and name.startswith('(d)'):
                        for ref, url in references.items():
                            before = cpu_ms(pid)
                            ms, r = one(url.format(cid=cid, iid=p.rsplit('/', 1)[1]), None)
                            if i:
                                samples.setdefault(ref, []).append(ms)
                                cpu.setdefault(ref, []).append(cpu_ms(pid) - before)
                            docs[ref] = r.json()
            for t, v in samples.items():
                if v:
                    out[(t, name, mode)] = (statistics.median(v), docs[t],
                                            statistics.median(cpu[t]))
    return out


# -- the floor: pyogrio (GDAL, Arrow) read + GeoJSON dicts + json.dumps ----------------------

def floor(path, n, runs, only=None):
    import pyogrio
    import shapely
    deep = 900_000 if n == 1_000_000 else int(n * 0.9)
    bbox = tuple(float(v) for v in BBOX1.split(','))
    fid = item_id(n)
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
        if only and name[1] not in only:
            continue

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


# -- what each per-request hook adds to (d), in process -------------------------------------

def hook_costs(env, files, n, rounds):
    """(d) for random ids in this process, through the full app as gunicorn serves it: with
    every hook, without each of the app's and the OGC API blueprint's before/after-request
    hooks in turn, and with none; the variants in a new random order each round, so drift and
    cache effects fall on all alike ('all, again' shows what is left of them). Returns
    [(variant, median µs, the statuses it answered)]."""
    from werkzeug.test import EnvironBuilder
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        bench_catalogue(env['RENKEI_BENCH_DIR'], files)
        app = full_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # full_app wraps wsgi_app only: the hooks are this app's.
    registries = {'before': app.before_request_funcs, 'after': app.after_request_funcs}
    every = {(kind, bp): list(funcs) for kind, reg in registries.items()
             for bp, funcs in reg.items() if bp in (None, 'ogcapi')}

    def restore():
        for (kind, bp), funcs in every.items():
            registries[kind][bp][:] = funcs

    def without(kind, bp, i):
        def setup():
            restore()
            del registries[kind][bp][i]
        return setup

    def none():
        for kind, bp in every:
            registries[kind][bp][:] = []

    variants = [('all', restore)]
    for (kind, bp), funcs in every.items():
        for i, f in enumerate(funcs):
            name = getattr(f, '__qualname__', repr(f)).replace('.<locals>', '')
            variants.append((f'without {kind} {name}', without(kind, bp, i)))
    variants += [('none', none), ('all, again', restore)]
    base = env['RENKEI_BENCH_URL'].rsplit('/', 1)[0]
    rng = random.Random(17)
    times = {name: [] for name, _ in variants}

    statuses = {name: set() for name, _ in variants}

    def answer(environ):
        seen = []
        body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
        b''.join(body)
        getattr(body, 'close', lambda: None)()
        return seen[0]

    try:
        for _ in range(rounds):
            environ = EnvironBuilder(path=f'/ogcapi/collections/points/items/'
                                          f'{rng.randrange(1, n + 1)}', base_url=base,
                                     environ_base={'REMOTE_ADDR': '127.0.0.1'}).get_environ()
            for name, setup in rng.sample(variants, len(variants)):
                setup()
                t = time.perf_counter_ns()
                status = answer(dict(environ))
                times[name].append(time.perf_counter_ns() - t)
                statuses[name].add(status)
    finally:
        restore()
        # The usage events written now, before the caller removes the catalogue under them.
        app.extensions['renkei_meter'].flush()
    # A hook whose absence breaks the answer (or a later hook) times something else.
    return [(name, statistics.median(times[name]) / 1000, sorted(statuses[name]))
            for name, _ in variants]


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
    ap.add_argument('--stock-venv', help="a venv with pygeoapi 0.21, SpatiaLite-capable sqlite3 "
                    "and GDAL's Python bindings (see the module docstring)")
    ap.add_argument('--geojson', action='store_true',
                    help="also pygeoapi's stock GeoJSON provider on the polygons (slow)")
    ap.add_argument('--points', type=int, default=SETS['points'],
                    help='size of the points file (smaller for a quick run)')
    ap.add_argument('--polygons', type=int, default=SETS['polygons'])
    ap.add_argument('--data-dir', help='where the generated files live (default bench/out; '
                    'RENKEI_BENCH_DATA too): big files belong outside the worktree')
    ap.add_argument('--only-data', action='store_true', help='generate the files and stop')
    ap.add_argument('--app', choices=('full', 'bare'), default='full',
                    help='full: the whole app (create_app) over a catalogue publishing the '
                    'files, every per-request hook included; bare: the OGC API blueprint alone')
    ap.add_argument('--queries', default='abcde',
                    help='which of the queries (a)-(e) to run, e.g. d (default all)')
    ap.add_argument('--renkei-venv', help="a venv with renkei installed to serve it from "
                    "(default: this Python's): made from the stock venv's Python, both servers "
                    "run on the same interpreter build")
    ap.add_argument('--hook-rounds', type=int, default=1000,
                    help='--app full: (d) in this process with each per-request hook left out '
                    'in turn, this many rounds (0: skip)')
    ap.add_argument('--prewarm', action='store_true',
                    help="read each set's files (renkei's and the stock copy) into the page "
                    "cache before its queries: cold then means what the issue means, every "
                    "request different, rather than pages the OS dropped while idle")
    args = ap.parse_args()
    global OUT
    OUT = args.data_dir or OUT
    SETS.update(points=args.points, polygons=args.polygons)
    sys.path.insert(0, ROOT)
    files = data_files()
    if args.only_data:
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    tmp = tempfile.mkdtemp(prefix='renkei-bench-')
    env_ours = dict(env, RENKEI_BENCH_FILES=json.dumps(files),
                    RENKEI_BENCH_SETS=json.dumps(SETS), RENKEI_BENCH_URL=base + '/ogcapi',
                    RENKEI_BENCH_DIR=os.path.join(tmp, 'catalogue'),
                    # Limits still count every request (Flask-Limiter, this process's
                    # memory as in a `renkei serve` without Redis); the bench must not hit one.
                    RENKEI_RATE_LIMIT='100000000/hour')
    if args.app == 'full':
        bench_catalogue(env_ours['RENKEI_BENCH_DIR'], files)
    app_spec = f'bench.ogcapi_bench:{args.app}_app()'
    references = {'http': base + ('/bare/ping' if args.app == 'full' else '/ping')}
    if args.app == 'full':
        references['platform'] = base + '/ogcapi/collections/{cid}/constant/{iid}'
    renkei_bin = os.path.join(args.renkei_venv, 'bin') if args.renkei_venv else None
    print(interpreters(renkei_bin, args.stock_venv), flush=True)
    results = {}
    proc = gunicorn(app_spec, port, env_ours, bindir=renkei_bin)
    copies = stock_copies(files) if args.stock_venv else {}
    stock = stock_server(copies, args.stock_venv, tmp) if args.stock_venv else None
    try:
        for kind, n in SETS.items():
            if args.prewarm:
                read = prewarm([files[kind], *filter(None, [copies.get(kind)])])
                print(f'\n{kind}: {read / 2**20:,.0f} MiB read into the page cache', flush=True)
            targets = {'renkei': (f'{base}/ogcapi', kind, False, worker_pid(proc.pid))}
            if stock:
                stock_pid = worker_pid(stock[0].pid)
                targets['SQLiteGPKG'] = (stock[1], f'{kind}-sqlite', True, stock_pid)
                targets['OGR'] = (stock[1], f'{kind}-ogr', True, stock_pid)
            if args.app == 'full':
                # Authorization on the read path: a dataset the caller may not read is a 404.
                status = Answer(0, b'', b'')
                try:
                    one(f'{base}/ogcapi/collections/restricted/items/{item_id(n)}', None)
                except RuntimeError as err:
                    status = err
                assert ' 404 ' in str(status), f'restricted item answered: {status}'
            res = interleaved(targets, n, args.runs, args.stock_runs, references,
                              args.queries)
            results.update({(kind, k[1], k[2]): v[0] for k, v in res.items() if k[0] == 'renkei'})
            results[kind] = res
            print(f'\n{kind} ({n:,}), HTTP, 1 gunicorn sync worker each, interleaved; median ms '
                  f'(renkei of {args.runs}, stock of {args.stock_runs}); cold = every request '
                  'differs:')
            print(f'  {"query":20} {"renkei warm":>11} {"cold":>8}  {"SQLiteGPKG warm":>15} '
                  f'{"cold":>8}  {"OGR warm":>9} {"cold":>8}  matched (renkei cold)')
            for name in queries(n, args.queries):
                cells = []
                for t in ('renkei', 'SQLiteGPKG', 'OGR'):
                    for mode in ('warm', 'cold'):
                        v = res.get((t, name, mode))
                        # (d) is under a millisecond: a tenth would hide what it is compared on.
                        cells.append(f'{v[0]:8.{2 if v[0] < 10 else 1}f}' if v else f'{"-":>8}')
                cold_doc = res[('renkei', name, 'cold')][1]
                matched = cold_doc.get('numberMatched', 'omitted') if 'features' in cold_doc else ''
                print(f'  {name:20} {cells[0]:>11} {cells[1]}  {cells[2]:>15} {cells[3]}  '
                      f'{cells[4]:>9} {cells[5]}  {matched}', flush=True)
            for mode in ('warm', 'cold'):
                v = res.get(('http', '(d) item by id', mode))
                if v:
                    print(f'  HTTP alone ({mode}, beside (d)): a constant Feature from a bare '
                          f'Flask route on the same worker: {v[0]:.2f} ms (worker CPU '
                          f'{v[2]:.2f} ms)')
                v = res.get(('platform', '(d) item by id', mode))
                if v:
                    print(f'  platform alone ({mode}, beside (d)): the same constant through every '
                          f'hook an item passes: {v[0]:.2f} ms (worker CPU {v[2]:.2f} ms)')
            print('  the same requests as worker CPU time (median ms; schedstat of the gunicorn '
                  'worker, so other load on the machine hardly counts):')
            for name in queries(n, args.queries):
                cells = []
                for t in ('renkei', 'SQLiteGPKG', 'OGR'):
                    for mode in ('warm', 'cold'):
                        v = res.get((t, name, mode))
                        cells.append(f'{v[2]:8.2f}' if v else f'{"-":>8}')
                print(f'  {name:20} {cells[0]:>11} {cells[1]}  {cells[2]:>15} {cells[3]}  '
                      f'{cells[4]:>9} {cells[5]}', flush=True)
        print(f'  peak renkei worker RSS (VmHWM): {worker_hwm(proc.pid):.0f} MiB')
    finally:
        proc.terminate()
        proc.wait(10)
        if stock:
            stock[0].terminate()
            stock[0].wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f'\nfloor, in-process: pyogrio raw read (numpy) + GeoJSON dicts + '
          f'json.dumps, median of {args.runs} (ms); ratios of renkei warm / cold to it, and of '
          'the best stock provider to renkei, warm and cold:')
    for kind, n in SETS.items():
        for name, ms in floor(files[kind], n, args.runs, args.queries).items():
            warm, cold = results[(kind, name, 'warm')], results[(kind, name, 'cold')]
            stock = {mode: [v[0] for (t, q, m), v in results[kind].items()
                            if t in ('SQLiteGPKG', 'OGR') and q == name and m == mode]
                     for mode in ('warm', 'cold')}
            best = (f'best stock / renkei = {min(stock["warm"]) / warm:6.1f}x warm '
                    f'{min(stock["cold"]) / cold:6.1f}x cold' if stock['cold'] else '')
            print(f'  {kind:8} {name:20} {ms:8.1f}   warm/floor = {warm / ms:5.2f}   '
                  f'cold/floor = {cold / ms:5.2f}   {best}')
            for ref, what in (('http', 'HTTP alone'), ('platform', 'platform alone')):
                answers = [results[kind].get((ref, name, mode)) for mode in ('warm', 'cold')]
                if stock['cold'] and all(answers):
                    # No answer of this worker can beat its constant: the most any item can be.
                    print(f'  {"":8} {"ceiling: " + what:29} best stock / it = '
                          f'{min(stock["warm"]) / answers[0][0]:6.1f}x warm '
                          f'{min(stock["cold"]) / answers[1][0]:6.1f}x cold')

    if args.app == 'full' and 'd' in args.queries and args.hook_rounds > 0:
        env_hooks = dict(env_ours, RENKEI_BENCH_DIR=tempfile.mkdtemp(prefix='renkei-hooks-'))
        costs = hook_costs(env_hooks, files, SETS['points'], args.hook_rounds)
        print(f'\n(d) on points in this process ({sys.implementation.name} '
              f'{sys.version.split()[0]}), through the whole app, median of {args.hook_rounds} '
              'random ids per variant, variants in random order (µs; what a hook adds is the '
              'difference to "all"; without a before hook, the after hook that reads its state '
              'does little too: Meter, ApiLimits):')
        every = costs[0][1]
        for name, us, statuses in costs:
            odd = '' if statuses == ['200 OK'] else f'  answered {", ".join(statuses)}'
            print(f'  {name:60} {us:7.1f}  {every - us:+7.1f}{odd}')
        shutil.rmtree(env_hooks['RENKEI_BENCH_DIR'], ignore_errors=True)

    if not args.stock_venv:
        print('\npygeoapi stock SQLiteGPKG / OGR: not measured (give --stock-venv, see above)')
    if args.geojson:
        ms, hwm, returned = stock_geojson(files['polygons'].replace('.gpkg', '.geojson'),
                                          args.stock_runs, env)
        ours = results[('polygons', '(a) limit=1000', 'warm')]
        print(f'  GeoJSON, polygons (a) limit=1000: {ms:.0f} ms (median of {args.stock_runs}), '
              f'returned={returned}, peak RSS {hwm:.0f} MiB; ours is {ms / ours:.0f}x faster')
    if args.wrk_seconds <= 0:
        return

    port = free_port()
    base = f'http://127.0.0.1:{port}'
    env_ours['RENKEI_BENCH_URL'] = base + '/ogcapi'
    tmp = tempfile.mkdtemp(prefix='renkei-bench-')
    env_ours['RENKEI_BENCH_DIR'] = os.path.join(tmp, 'catalogue')
    if args.app == 'full':
        bench_catalogue(env_ours['RENKEI_BENCH_DIR'], files)
    proc = gunicorn(app_spec, port, env_ours, workers=2, bindir=renkei_bin)
    try:
        out = run_wrk(base, args.wrk_seconds)
        print(f'\nwrk, 2 gunicorn workers, {args.wrk_seconds} s, mix of (a)/(c)/(d) on points:')
        print(out if out is not None else '  wrk not installed (apt-get install -y wrk)')
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
