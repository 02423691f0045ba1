"""Translate-and-publish of a synthetic A31-like flood layer, versus a plain pyogrio copy.

    python bench/translate_bench.py                 # 1,000,000 polygons (the target size)
    python bench/translate_bench.py --features 100000   # a quick run
    python bench/translate_bench.py --geojson-mb 1000   # the 1 GB A31 GeoJSON case
    python bench/translate_bench.py --geojson-mb 100    # a quick GeoJSON run

Generates a GeoPackage of small polygons over Hyogo with KSJ A31 v2 attributes (A31_201 depth
rank 1–6, A31_202 date, A31_203 notice number, A31_204 rainfall), then, each in its own process
so peak RSS is its own: (1) pyogrio.read_dataframe + write_dataframe of the whole file;
(2) geo.stream.ChunkedTranslation written by store.versions.write_chunks (chunks → reader
clean-up → geo.translate → GeoPackage), as the harvest pipeline does for large files.
Prints features/s and peak RSS. Targets: peak RSS < 1.5 GB, throughput within 3× of the copy.

With --geojson-mb the source is a GeoJSON FeatureCollection of about that size (as MLIT ships
A31a for Hyogo: ~1 GB, ~900,000 polygons) written from the same generator; the translation
reads it once in Arrow batches (geo.stream). Targets there: peak RSS < 1 GB, time within 2× of
the plain copy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def generate(path: Path, n: int, chunk: int = 200_000) -> None:
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely
    rng = np.random.default_rng(28)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        x = rng.uniform(134.25, 135.45, k)
        y = rng.uniform(34.20, 35.65, k)
        d = rng.uniform(0.0003, 0.002, k)
        # 6-vertex rings (a square with one extra vertex), like KSJ's small mesh polygons.
        xs = np.stack([x, x + d, x + d, x + d / 2, x, x], axis=1)
        ys = np.stack([y, y, y + d, y + d * 1.2, y + d, y], axis=1)
        rings = shapely.linearrings(np.stack([xs, ys], axis=2))
        frame = gpd.GeoDataFrame(pd.DataFrame({
            "A31_201": rng.integers(1, 7, k).astype("int32"),
            "A31_202": np.full(k, "2016/06/01", dtype=object),
            "A31_203": np.full(k, "兵庫県告示第100号", dtype=object),
            "A31_204": np.full(k, "加古川流域の24時間総雨量 423mm", dtype=object),
        }), geometry=shapely.polygons(rings), crs="EPSG:6668")
        pyogrio.write_dataframe(frame, path, layer="A31", driver="GPKG", append=start > 0)


def write_geojson(gpkg: Path, out: Path) -> None:
    """A FeatureCollection with the GeoPackage's features, written batch by batch."""
    import json as _json
    import shapely
    sys.path.insert(0, str(REPO))
    from geo.stream import read_batches
    with open(out, "w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","name":"A31a","features":[\n')
        first = True
        for frame in read_batches(gpkg, batch_size=100_000):
            geoms = shapely.to_geojson(frame.geometry.values)
            props = frame.drop(columns="geometry").to_dict("records")
            for g, p in zip(geoms, props):
                p = {k: (v.item() if hasattr(v, "item") else v) for k, v in p.items()}
                fh.write(("" if first else ",\n") + '{"type":"Feature","properties":'
                         + _json.dumps(p, ensure_ascii=False) + ',"geometry":' + g + "}")
                first = False
        fh.write("\n]}\n")


def features_for_mb(mb: float, work: Path) -> int:
    """How many generated polygons make a GeoJSON of about ``mb`` MB (from a 2,000 sample)."""
    sample, text = work / "sample.gpkg", work / "sample.geojson"
    generate(sample, 2000)
    write_geojson(sample, text)
    per = text.stat().st_size / 2000
    sample.unlink()
    text.unlink()
    return int(mb * 1e6 / per)


def run_copy(src: str, out: str) -> dict:
    import pyogrio
    t = time.perf_counter()
    frame = pyogrio.read_dataframe(src)
    pyogrio.write_dataframe(frame, out, layer="features", driver="GPKG", SPATIAL_INDEX="YES")
    return {"seconds": time.perf_counter() - t, "features": len(frame)}


def run_translate(src: str, data_dir: str) -> dict:
    sys.path.insert(0, str(REPO))
    from geo.stream import ChunkedTranslation
    from store.versions import write_chunks
    # Translation only: the tile pyramid a publish also builds is bench/tiles_bench.py's.
    os.environ["RENKEI_TILES_PREGEN_MIN"] = str(10 ** 12)
    t = time.perf_counter()
    fmt = "geojson" if src.endswith(".geojson") else "gpkg"
    chunks = ChunkedTranslation(src, fmt=fmt, title="洪水浸水想定区域（想定最大規模）",
                                publisher="兵庫県", source_dataset="bench")
    written = write_chunks(chunks, data_dir, "bench-a31", 1)
    report = chunks.result
    return {"seconds": time.perf_counter() - t, "features": written.feature_count,
            "theme": report.theme, "rejected": len(report.rejected)}


def child(mode: str, src: str, out: str) -> None:
    result = run_copy(src, out) if mode == "copy" else run_translate(src, out)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, ensure_ascii=False))


def measure(mode: str, src: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"))
    ap.add_argument("--geojson-mb", type=float,
                    help="translate a GeoJSON of about this many MB instead of the GeoPackage")
    ap.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        n = features_for_mb(args.geojson_mb, work) if args.geojson_mb else args.features
        src = work / f"a31_{n}.gpkg"
        if not src.exists():
            t = time.perf_counter()
            generate(src, n)
            print(f"generated {n:,} polygons in {time.perf_counter() - t:.1f} s "
                  f"({src.stat().st_size / 1e6:.0f} MB GeoPackage)")
        if args.geojson_mb:
            gpkg, src = src, work / f"a31_{n}.geojson"
            if not src.exists():
                t = time.perf_counter()
                write_geojson(gpkg, src)
                print(f"wrote {src.stat().st_size / 1e6:,.0f} MB GeoJSON in "
                      f"{time.perf_counter() - t:.1f} s")
        copy = measure("copy", src, work / "copy.gpkg")
        trans = measure("translate", src, work / "data")
        for name, r in (("plain read_dataframe+write_dataframe", copy),
                        ("translate-and-publish (geo.stream)", trans)):
            print(f"{name:40} {r['features']:>9,} features {r['seconds']:7.1f} s "
                  f"{r['features'] / r['seconds']:>9,.0f} features/s  peak RSS "
                  f"{r['peak_rss_mb']:7.0f} MB")
        ratio = trans["seconds"] / copy["seconds"]
        ratio_target, rss_target = (2, 1024) if args.geojson_mb else (3, 1536)
        print(f"theme={trans['theme']} rejected={trans['rejected']}  "
              f"time ratio translate/copy = {ratio:.2f} (target ≤ {ratio_target})  "
              f"peak RSS target < {rss_target} MB: "
              f"{'ok' if trans['peak_rss_mb'] < rss_target else 'MISSED'}")


if __name__ == "__main__":
    main()
