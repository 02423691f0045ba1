"""OGC API items on PostGIS vs GeoPackage: one synthetic point layer written both ways (the
store's own writers), served by the same OGC API over HTTP in one process, p50/p95 per query.

    .venv/bin/python bench/features_pg_bench.py --rows 1000000 \
        --server postgresql://postgres@127.0.0.1:5432/postgres

A throwaway database (with PostGIS) is made on the server for the run and dropped at the end.
Figures are medians of --reps requests after one warm-up each; compare the two columns of one
run, not runs with each other (the machine is shared).
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import requests
from flask import Flask
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ogcapi.api import OGCAPI  # noqa: E402
from ogcapi.blueprint import register_ogcapi  # noqa: E402
from store import features_pg, versions  # noqa: E402
from store.db import make_engine  # noqa: E402

HYOGO = (134.25, 34.15, 135.47, 35.68)
CITIES = ["姫路市", "加古川市", "加西市", "養父市", "神戸市", "明石市", "西宮市", "尼崎市"]


def frame(n: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(7)
    return gpd.GeoDataFrame({
        "name": [f"地点{i:07d}" for i in range(n)],
        "city": rng.choice(CITIES, n),
        "address": [f"兵庫県{c}本町{i % 97}丁目" for i, c in zip(range(n), rng.choice(CITIES, n))],
        "capacity": rng.integers(10, 1000, n),
        "area": rng.uniform(10, 5000, n).round(2),
        "barrier_free": rng.integers(0, 2, n).astype(bool),
        "kind": rng.choice(["小学校", "中学校", "公民館", "公園", "体育館"], n),
        "floors": rng.integers(1, 6, n),
        "note": [f"備考{i % 1000}" for i in range(n)],
        "code": rng.integers(280000, 289999, n),
    }, geometry=gpd.points_from_xy(rng.uniform(HYOGO[0], HYOGO[2], n),
                                   rng.uniform(HYOGO[1], HYOGO[3], n)), crs=4326)


def serve(collections, engine):
    holder = {}
    srv = make_server("127.0.0.1", 0, lambda env, sr: holder["app"](env, sr), threaded=True)
    base = f"http://127.0.0.1:{srv.server_port}/ogcapi"
    app = Flask(__name__)
    register_ogcapi(app, OGCAPI(base, lambda: collections, lambda: "1", engine=engine))
    holder["app"] = app
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return base, srv


def timed(session, url, params, reps):
    session.get(url, params=params, timeout=120).raise_for_status()   # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        r = session.get(url, params=params, timeout=120)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    out.sort()
    return statistics.median(out), out[int(0.95 * (len(out) - 1))], len(r.content)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    name = "renkei_bench_" + secrets.token_hex(4)
    with psycopg.connect(args.server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = args.server.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("CREATE EXTENSION postgis")
        run(args, url)
    finally:
        with psycopg.connect(args.server, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args, url: str) -> None:
    gdf = frame(args.rows)
    # Items only: no tile pyramid for the GeoPackage (the PostGIS writer makes none either).
    os.environ["RENKEI_TILES_PREGEN_MIN"] = str(10 ** 12)
    data_dir = Path(tempfile.mkdtemp(prefix="renkei-bench-"))
    t = time.perf_counter()
    gpkg = versions.VersionWriter(data_dir, "bench", 1)
    with gpkg:
        gpkg.append(gdf)
        g = gpkg.commit()
    t_gpkg = time.perf_counter() - t
    os.environ["RENKEI_DB_POOL_SIZE"] = "4"
    engine = make_engine(url)
    t = time.perf_counter()
    with features_pg.PostGISWriter(None, "bench", 1, engine=engine) as writer:
        writer.append(gdf)
        p = writer.commit()
    t_pg = time.perf_counter() - t
    print(f"rows {args.rows:,}: write GeoPackage {t_gpkg:.1f} s, PostGIS (COPY + GiST) "
          f"{t_pg:.1f} s")
    stores = ["gpkg", "pg"]
    cols = [{"id": "gpkg", "title": "gpkg", "path": str(data_dir / g.path), "layer": g.layer,
             "bbox": list(HYOGO)},
            {"id": "pg", "title": "pg", "path": p.path, "layer": p.layer, "bbox": list(HYOGO)}]
    base, srv = serve(cols, engine)
    # ~1 % of the area (and of the points): a 0.122° x 0.153° box in the middle.
    cx, cy = (HYOGO[0] + HYOGO[2]) / 2, (HYOGO[1] + HYOGO[3]) / 2
    w, h = (HYOGO[2] - HYOGO[0]) / 10, (HYOGO[3] - HYOGO[1]) / 10
    box = f"{cx - w / 2},{cy - h / 2},{cx + w / 2},{cy + h / 2}"
    queries = [
        ("(a) items limit=1000", "items", {"limit": 1000, "f": "json"}),
        ("(b) deep page offset=900k", "items",
         {"limit": 1000, "offset": int(args.rows * 0.9), "f": "json"}),
        ("(c) bbox ~1 % limit=1000", "items", {"bbox": box, "limit": 1000, "f": "json"}),
        ("(d) item by id", f"items/{args.rows // 2}", {"f": "json"}),
        ("(e) CQL2 filter limit=100", "items",
         {"filter": "city = '姫路市' AND capacity < 50", "limit": 100, "f": "json"}),
    ]
    print(f"{'query':32} {'GeoPackage p50/p95 ms':>24} {'PostGIS p50/p95 ms':>22} {'ratio':>7}")
    with requests.Session() as s:
        for label, path, params in queries:
            got = {}
            for cid in stores:
                got[cid] = timed(s, f"{base}/collections/{cid}/{path}", params, args.reps)
            (g50, g95, gsize), (p50, p95, psize) = got["gpkg"], got["pg"]
            print(f"{label:32} {g50:10.1f} / {g95:8.1f}   {p50:10.1f} / {p95:8.1f} "
                  f"{p50 / g50:7.2f}  ({gsize:,} / {psize:,} bytes)")
    srv.shutdown()
    engine.dispose()


if __name__ == "__main__":
    main()
