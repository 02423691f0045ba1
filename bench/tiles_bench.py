"""Vector tiles and the hazard lookup at Hyogo scale: A31-like flood polygons, published as
the pipeline does (store.versions: GeoPackage + tile pyramid), served by `renkei serve`.

    python bench/tiles_bench.py                      # 900,000 polygons (the target size)
    python bench/tiles_bench.py --features 100000    # a quick run
    python bench/tiles_bench.py --compare-gdal 50000 # also GDAL's MVT driver on 50,000

Prints: pre-generation time and peak RSS (this process and tippecanoe's), archive size, the
largest tile; p50/p95 tile latency over a fixed list of 1,000 tiles z5–z15 through HTTP (first
request, then again from the server's cache); /api/hazards p50/p95 over 200 fixed points; and,
as the baseline of the same run, the latency of a small static file on the same server.
Targets: pre-generation < 10 min, every tile < 500 KB, cached tile p95 < 20 ms, hazards p95 < 50 ms.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BBOX = (134.25, 34.20, 135.45, 35.65)
RANKS = ["0.5m未満", "0.5m以上3m未満", "3m以上5m未満", "5m以上10m未満", "10m以上20m未満", "20m以上"]


def generate(path: Path, n: int, chunk: int = 200_000) -> None:
    """A31-like polygons in the flood_area theme schema (what a published version holds)."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely
    rng = np.random.default_rng(28)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        x = rng.uniform(BBOX[0], BBOX[2], k)
        y = rng.uniform(BBOX[1], BBOX[3], k)
        d = rng.uniform(0.0003, 0.002, k)
        xs = np.stack([x, x + d, x + d, x + d / 2, x, x], axis=1)
        ys = np.stack([y, y, y + d, y + d * 1.2, y + d, y], axis=1)
        rank = rng.integers(1, 7, k)
        lo = np.array([0, 0.5, 3, 5, 10, 20])[rank - 1]
        hi = np.array([0.5, 3, 5, 10, 20, np.nan])[rank - 1]
        frame = gpd.GeoDataFrame(pd.DataFrame({
            "scale": "L2", "depth_rank": rank.astype("int32"),
            "depth_range": np.array(RANKS, dtype=object)[rank - 1],
            "depth_min_m": lo, "depth_max_m": hi, "river_name": "加古川",
            "publisher": "兵庫県", "source_dataset": "bench-a31",
            "source_row": np.arange(start + 1, start + k + 1)}),
            geometry=shapely.polygons(shapely.linearrings(np.stack([xs, ys], axis=2))),
            crs="EPSG:4326")
        pyogrio.write_dataframe(frame, path, layer="features", driver="GPKG",
                                append=start > 0, SPATIAL_INDEX="YES")


def shelters(path: Path, n: int = 5000) -> None:
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely
    rng = np.random.default_rng(7)
    flags = {k: rng.random(n) < p for k, p in (("flood", 0.7), ("landslide", 0.6),
                                              ("tsunami", 0.3), ("earthquake", 0.9))}
    frame = gpd.GeoDataFrame(pd.DataFrame({
        "kind": np.where(rng.random(n) < 0.5, "指定緊急避難場所", "指定緊急避難場所兼指定避難所"),
        "name": [f"避難所{i}" for i in range(n)], "address": [f"兵庫県某市{i}" for i in range(n)],
        **flags}), geometry=shapely.points(rng.uniform(BBOX[0], BBOX[2], n),
                                           rng.uniform(BBOX[1], BBOX[3], n)), crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path, layer="features", driver="GPKG", SPATIAL_INDEX="YES")


def child_pregen(gpkg: str, out: str) -> None:
    """store.tiles.pregenerate, its three steps timed one by one (wall and CPU)."""
    from store import tiles
    out = Path(out)
    out.unlink(missing_ok=True)
    stages = {}

    def clock():
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stage(name, since):
        now = clock()
        stages[name] = [now[0] - since[0], now[1] - since[1]]
        return now
    t = start = clock()
    with tempfile.TemporaryDirectory(prefix="renkei-tiles-", dir=out.parent) as tmp:
        features, id_property = tiles.export_features(gpkg, "features", Path(tmp))
        t = stage(f"export ({features[0].suffix[1:]} ×{len(features)})", t)
        raw = Path(tmp) / "raw.mbtiles"
        tiles.run_tippecanoe(features, raw, name="bench-a31", id_property=id_property)
        for path in features:
            path.unlink()
        t = stage("tippecanoe", t)
        tiles.pack(raw, out)
        t = stage("pack", t)
    seconds = t[0] - start[0]
    archive = tiles.TileArchive(out)
    size, z, x, y = archive.largest()
    count = archive._con().execute("SELECT count(*) FROM tiles").fetchone()[0]
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": seconds, "tiles": count, "bytes": os.path.getsize(out),
                      "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "largest": [size, z, x, y], "stages": stages,
                      "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_tippecanoe_mb":
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def child_gdal(gpkg: str, out: str, n: int) -> None:
    import pyogrio
    t = time.perf_counter()
    frame = pyogrio.read_dataframe(gpkg, max_features=n)
    pyogrio.write_dataframe(frame, out, driver="MBTiles", layer="bench",
                            dataset_options={"MINZOOM": 0, "MAXZOOM": 14})
    print(json.dumps({"seconds": time.perf_counter() - t, "bytes": os.path.getsize(out),
                      "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(*args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{args[0]} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def publish(data_dir: Path, gpkg: Path, tiles: Path, shelter_gpkg: Path, n: int) -> None:
    """Catalogue records for the flood layer and theme-shelter, as a harvest leaves them."""
    import shutil
    from geo.themes import field_info
    from store.db import Collection, Dataset, Store, utcnow
    store = Store(data_dir)
    for cid, theme, src, count, extra in (
            ("bench-a31--flood", "flood_area", gpkg, n, tiles),
            ("theme-shelter", "shelter", shelter_gpkg, 5000, None)):
        folder = data_dir / "features" / cid
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / "v1.gpkg")
        if extra is not None:
            shutil.copy(extra, folder / "v1.mbtiles")
        with store.session() as s, s.begin():
            ds = Dataset(id=cid.split("--")[0] if "--" in cid else cid, source_name="bench",
                         remote_id=cid, name=cid, title=cid, theme=theme, created_at=utcnow())
            s.add(ds)
            s.add(Collection(id=cid, dataset=ds, resource_id=cid, title=cid, path=str(
                (folder / "v1.gpkg").relative_to(data_dir)), layer="features",
                feature_count=count, bbox=list(BBOX), fields=field_info(theme), version=1))
            store.bump_version(s)


def tile_list(n: int = 1000) -> list[tuple[int, int, int]]:
    """A fixed list: z5–z15 evenly, each at a fixed pseudo-random point of the layer's extent."""
    rng = np.random.default_rng(15)
    out = []
    for i in range(n):
        z = 5 + i % 11
        lon, lat = rng.uniform(BBOX[0], BBOX[2]), rng.uniform(BBOX[1], BBOX[3])
        k = 1 << z
        x = int((lon + 180) / 360 * k)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * k)
        out.append((z, x, y))
    return out


def pregen_report(r: dict) -> None:
    size, z, x, y = r["largest"]
    print(f"pre-generation (tippecanoe z0–14): {r['seconds']:.1f} s, peak RSS "
          f"{r['rss_self_mb']:.0f} MB (python) / {r['rss_tippecanoe_mb']:.0f} MB "
          f"(tippecanoe); CPU {r['cpu_s']:.0f} s; {r['tiles']:,} tiles, archive "
          f"{r['bytes'] / 1e6:.1f} MB; largest tile {size / 1000:.0f} KB at {z}/{x}/{y} "
          f"(target < 500 KB, {'ok' if size < 500_000 else 'MISSED'}); target < 600 s: "
          f"{'ok' if r['seconds'] < 600 else 'MISSED'}")
    print("  stages (wall s / CPU s): " + ", ".join(
        f"{k} {w:.1f} / {c:.1f}" for k, (w, c) in r.get("stages", {}).items()))


def timed(session, url, **kw):
    t = time.perf_counter()
    r = session.get(url, timeout=60, **kw)
    return (time.perf_counter() - t) * 1000, r


def pct(values, p):
    return float(np.percentile(values, p))


def serve_and_measure(data_dir: Path, workers: int) -> None:
    from tests.servers import renkei_serve
    # The rate limits (catalog.quotas: the API's 1000/hour for /api/hazards, 30000/hour for
    # tiles, per address) would answer 429 to one address's thousands of requests: latency is
    # measured here.
    os.environ.setdefault("RENKEI_RATE_LIMIT", "1000000/hour")
    os.environ.setdefault("RENKEI_TILE_RATE_LIMIT", "1000000/hour")
    with renkei_serve(data_dir, workers=workers) as (base, _pid):
        s = requests.Session()
        static = [timed(s, f"{base}/static/renkei.css")[0] for _ in range(200)]
        tiles = tile_list()
        url = f"{base}/ogcapi/collections/bench-a31--flood/tiles/WebMercatorQuad"
        for label in ("first request", "cached"):
            ms, sizes, codes = [], [], {}
            for z, x, y in tiles:
                t, r = timed(s, f"{url}/{z}/{y}/{x}?f=mvt", headers={"Accept-Encoding": "gzip"})
                ms.append(t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                sizes.append(len(r.content))
            if set(codes) - {200, 204}:
                print(f"  WARNING: not every tile answered 200/204: {codes}")
            print(f"tiles ({label}): {len(tiles)} tiles z5–z15, p50 {pct(ms, 50):.1f} ms, "
                  f"p95 {pct(ms, 95):.1f} ms, max {max(ms):.0f} ms; status {codes}; "
                  f"largest tile served {max(sizes) / 1000:.0f} KB")
        rng = np.random.default_rng(3)
        points = [(rng.uniform(34.6, 35.0), rng.uniform(134.6, 135.2)) for _ in range(200)]
        ms, found = [], 0
        for lat, lon in points:
            t, r = timed(s, f"{base}/api/hazards", params={"lat": lat, "lon": lon})
            ms.append(t)
            found += bool(r.json()["hazards"])
        print(f"/api/hazards: 200 points, p50 {pct(ms, 50):.1f} ms, p95 {pct(ms, 95):.1f} ms "
              f"({found} points inside a flood polygon)")
        print(f"baseline, static file on the same server: p50 {statistics.median(static):.1f} ms,"
              f" p95 {pct(static, 95):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=900_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare-gdal", type=int, default=0, metavar="N",
                    help="also time GDAL's MVT driver (MBTiles, z0–14) on the first N polygons")
    ap.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true",
                    help="serve the archive a previous run left in --workdir (no pre-generation)")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        mode, *rest = args.child
        {"pregen": child_pregen, "gdal": lambda a, b, n: child_gdal(a, b, int(n))}[mode](*rest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        gpkg = work / f"a31_{args.features}.gpkg"
        if not gpkg.exists():
            t = time.perf_counter()
            generate(gpkg, args.features)
            print(f"generated {args.features:,} polygons in {time.perf_counter() - t:.1f} s")
        tiles = work / f"a31_{args.features}.mbtiles"
        if args.reuse and tiles.exists():
            print("pre-generation skipped (--reuse): serving the archive already in --workdir")
        else:
            pregen_report(run_child("pregen", gpkg, tiles))
        if args.compare_gdal:
            n = min(args.compare_gdal, args.features)
            sub = work / f"a31_{n}.gpkg"
            if not sub.exists():
                generate(sub, n)
            g = run_child("gdal", sub, work / "gdal.mbtiles", n)
            t = run_child("pregen", sub, work / f"a31_{n}_t.mbtiles")
            print(f"same {n:,} polygons: GDAL MVT driver {g['seconds']:.1f} s "
                  f"({g['bytes'] / 1e6:.1f} MB, RSS {g['rss_self_mb']:.0f} MB) vs tippecanoe "
                  f"{t['seconds']:.1f} s ({t['bytes'] / 1e6:.1f} MB, largest tile "
                  f"{t['largest'][0] / 1000:.0f} KB)")
        shelter_gpkg = work / "shelters.gpkg"
        if not shelter_gpkg.exists():
            shelters(shelter_gpkg)
        data_dir = work / "data"
        if data_dir.exists():
            import shutil
            shutil.rmtree(data_dir)
        data_dir.mkdir()
        publish(data_dir, gpkg, tiles, shelter_gpkg, args.features)
        serve_and_measure(data_dir, args.workers)


if __name__ == "__main__":
    main()
