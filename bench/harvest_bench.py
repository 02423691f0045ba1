"""Harvest benchmark: a CKAN fixture on 127.0.0.1 with 200 datasets (mixed formats, 100,000
features in all); prints datasets/s, features/s and peak RSS for a first harvest and for a
second, unchanged one, and the ratio between them.

    python bench/harvest_bench.py [--datasets 200] [--features 100000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import REPO, FakeCKAN, package  # noqa: E402

FORMATS = ["csv-utf8", "csv-cp932", "geojson", "shapefile-zip", "gpkg"]


def make_files(folder: Path, datasets: int, features: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    per = features // datasets
    packages, files = [], {}
    for i in range(datasets):
        kind = FORMATS[i % len(FORMATS)]
        lon = rng.uniform(134.25, 135.47, per)
        lat = rng.uniform(34.15, 35.68, per)
        frame = gpd.GeoDataFrame({
            "名称": [f"指定避難所{i:03d}-{j:05d}号" for j in range(per)],
            "住所": [f"兵庫県加古川市加古川町{j % 50 + 1}丁目{j % 17 + 1}" for j in range(per)],
            "収容人数": rng.integers(10, 2000, per),
            "電話番号": ["079-421-2000"] * per,
        }, geometry=gpd.points_from_xy(lon, lat), crs=4326)
        stem = f"ds{i:03d}"
        if kind.startswith("csv"):
            name = f"{stem}.csv"
            table = frame.drop(columns="geometry").assign(緯度=lat.round(7), 経度=lon.round(7))
            table.to_csv(folder / name, index=False,
                         encoding="cp932" if kind == "csv-cp932" else "utf-8")
            fmt = "CSV"
        elif kind == "geojson":
            name = f"{stem}.geojson"
            frame.to_file(folder / name, driver="GeoJSON")
            fmt = "GeoJSON"
        elif kind == "gpkg":
            name = f"{stem}.gpkg"
            frame.to_file(folder / name, driver="GPKG")
            fmt = "GPKG"
        else:
            name = f"{stem}.zip"
            shp_dir = folder / stem
            shp_dir.mkdir()
            frame.to_file(shp_dir / f"{stem}.shp", driver="ESRI Shapefile", encoding="cp932")
            (shp_dir / f"{stem}.cpg").unlink(missing_ok=True)  # 国土数値情報 style: no .cpg
            with zipfile.ZipFile(folder / name, "w") as zf:
                for part in shp_dir.iterdir():
                    zf.write(part, part.name)
            fmt = "SHP"
        files[name] = folder / name
        packages.append(package(stem, f"ベンチマーク用データセット {i:03d}（{kind}）",
                                [(name, fmt)], tags=["ベンチ"]))
    return packages, files, per * datasets


def run_harvest(data_dir: Path, config: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB of this harvest process alone, exit code)."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib=%M", sys.executable, "-m",
                           "catalog.cli", "--data-dir", str(data_dir), "harvest", "--config",
                           str(config)], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = int(proc.stderr.rsplit("maxrss_kib=", 1)[1].split()[0])
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return seconds, rss, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--features", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "files").mkdir()
        t0 = time.perf_counter()
        packages, files, total = make_files(tmp / "files", args.datasets, args.features)
        print(f"fixture: {len(packages)} datasets, {total:,} features "
              f"({time.perf_counter() - t0:.1f} s to generate)")
        site = FakeCKAN(packages, files, max_rows=100)
        with site.running(keep_alive=True) as url:
            config = tmp / "sources.yaml"
            config.write_text(f"sources:\n  - name: bench\n    type: ckan\n    url: {url}\n"
                              f"    rows: 1000\n    allow_private_networks: true\n", encoding="utf-8")
            first, rss1, code1 = run_harvest(tmp / "data", config)
            second, rss2, code2 = run_harvest(tmp / "data", config)
        n = len(packages)
        print(f"first harvest     : {first:7.2f} s  {n / first:8.1f} datasets/s  "
              f"{total / first:10.0f} features/s  peak RSS {rss1 / 1024:.0f} MiB  exit {code1}")
        print(f"unchanged harvest : {second:7.2f} s  {n / second:8.1f} datasets/s  "
              f"{total / second:10.0f} features/s  peak RSS {rss2 / 1024:.0f} MiB  exit {code2}")
        print(f"unchanged / first : {second / first:.1%} (target < 10%)")
        print(f"downloads: {sum(site.downloads.values())} full, "
              f"{sum(site.not_modified.values())} not-modified")


if __name__ == "__main__":
    main()
