"""Peak RSS of `renkei harvest` for files that claim to be large (issue 11, item 4).

    .venv/bin/python bench/bomb_bench.py [--csv-mb 500] [--json-mb 300] [--geojson-mb 1024]
                                         [--bomb-gib 1.5] [--only NAME ...]

Each case is a `files` source harvested by the real CLI in its own process, whose peak RSS
(ru_maxrss from wait4) is printed beside the baseline: the same harvest of a small real file
(tests/data), measured in the same run, since the machine is shared and absolute figures are
noisy. Cases:
  bomb     a zip of --bomb-gib GiB of CSV rows packed into ~1.5 MB: must be refused (error)
  csv      a plain CSV of --csv-mb MB of points: published (read in chunks)
  json     a zip holding one GeoJSON member (.json) of --json-mb MB: published (in chunks)
  geojson  a GeoJSON file of --geojson-mb MB of polygons: published (in chunks)
  records  a zip holding one JSON table (an array of NGSI-like records) of --json-mb MB:
           published (ijson, in chunks; not in the default list)
The target is every case under 1 GB. Inputs are generated under a temporary directory, or
under --dir, where they are kept and reused by the next run (--make-only generates them, at
a low priority outside the bench lock, without harvesting).
Peak RSS is the larger of the harvest process's and its largest child's (tippecanoe).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1024 ** 2


def make_bomb(path: Path, gib: float) -> None:
    line = "名称,緯度,経度,住所\n加古川駅,34.7565,134.8414,兵庫県加古川市加古川町篠原町\n".encode()
    row = line.split(b"\n", 1)[1]
    block = row * (MB // len(row))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("shelters.csv", "w", force_zip64=True) as out:
            out.write(line.split(b"\n", 1)[0] + b"\n")
            for _ in range(int(gib * 1024)):
                out.write(block)


def csv_rows(rnd: random.Random):
    i = 0
    while True:
        i += 1
        yield (f"観測点{i},{34.2 + rnd.random():.6f},{134.2 + rnd.random():.6f},"
               f"加古川町{i % 999}番地付近,{rnd.randint(0, 9999)}\n")


def make_csv(path: Path, mb: int) -> None:
    rnd = random.Random(1)
    with open(path, "w", encoding="utf-8") as out:
        # Columns of no theme: a theme's merged layer is rebuilt from whole member frames
        # (geo.theme_layers), which is not what this bench measures.
        out.write("観測点,緯度,経度,設置場所,観測値\n")
        for row in csv_rows(rnd):
            out.write(row)
            if out.tell() > mb * MB:
                break


def features(rnd: random.Random, polygon: bool):
    i = 0
    while True:
        i += 1
        x, y = 134.2 + rnd.random(), 34.2 + rnd.random()
        if polygon:   # a flood-area-like ring of 24 vertices
            # Star-shaped (vertices in angle order), so valid as real flood areas are: the
            # rings this made before crossed themselves, and repairing every polygon
            # (shapely.make_valid) was 40 % of the harvest's time (pyinstrument, 40 MB slice).
            ring = [[round(x + 0.0005 * (0.6 + 0.4 * ((k * 7919) % 13) / 13)
                           * math.cos(2 * math.pi * k / 23), 6),
                     round(y + 0.0005 * (0.6 + 0.4 * ((k * 104729) % 17) / 17)
                           * math.sin(2 * math.pi * k / 23), 6)] for k in range(23)]
            ring.append(ring[0])
            geom = {"type": "Polygon", "coordinates": [ring]}
        else:
            geom = {"type": "Point", "coordinates": [round(x, 6), round(y, 6)]}
        yield {"type": "Feature", "properties": {"区画": f"区画{i}", "value": rnd.randint(0, 5),
                                                 "note": "土地利用の調査区画"},
               "geometry": geom}


def write_geojson(out, mb: int, polygon: bool) -> None:
    rnd = random.Random(2)
    out.write(b'{"type": "FeatureCollection", "features": [\n')
    written, first = 0, True
    for feat in features(rnd, polygon):
        data = (b"" if first else b",\n") + json.dumps(feat, ensure_ascii=False).encode()
        out.write(data)
        written += len(data)
        first = False
        if written > mb * MB:
            break
    out.write(b"\n]}\n")


def make_json_member(path: Path, mb: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("features.json", "w", force_zip64=True) as out:
            write_geojson(out, mb, polygon=False)


def make_records_member(path: Path, mb: int) -> None:
    rnd = random.Random(3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("entities.json", "w", force_zip64=True) as out:
            out.write(b"[\n")
            written, i = 0, 0
            while written <= mb * MB:
                i += 1
                rec = {"id": f"urn:ngsi-ld:Observation:{i}", "type": "Observation",
                       "観測点": f"観測点{i}", "緯度": round(34.2 + rnd.random(), 6),
                       "経度": round(134.2 + rnd.random(), 6), "観測値": rnd.randint(0, 9999)}
                data = (b",\n" if i > 1 else b"") + json.dumps(rec, ensure_ascii=False).encode()
                out.write(data)
                written += len(data)
            out.write(b"\n]\n")


def make_geojson(path: Path, mb: int) -> None:
    with open(path, "wb") as out:
        write_geojson(out, mb, polygon=True)


def _tree_rss(root: int) -> int:
    """RSS now of `root` and all its descendants (read from /proc), in bytes."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += parents.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _sample(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.25):
        peak[0] = max(peak[0], _tree_rss(pid))


def harvest(folder: Path, name: str, filename: str) -> tuple[float, int, int, str, int]:
    """(seconds, peak RSS bytes, exit code, what came of it, peak RSS of the process and its
    children together, sampled) of one harvest in its own process."""
    config = folder / f"{name}.yaml"
    config.write_text(f"sources:\n  - name: bench\n    type: files\n    organization: hyogo-pref\n"
                      f"    time_limit: 7200\n    files:\n      - id: {name}\n"
                      f"        title: {name}\n        url: {filename}\n", encoding="utf-8")
    data = folder / f"data-{name}"
    shutil.rmtree(data, ignore_errors=True)     # a kept folder: harvest afresh, not "unchanged"
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "catalog.cli", "--data-dir", str(data),
                             "harvest", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    stderr = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    seconds = time.monotonic() - start
    db = sqlite3.connect(data / "catalogue.db") if (data / "catalogue.db").exists() else None
    outcome = "?"
    if db is not None:
        counts = db.execute("SELECT feature_count FROM collection WHERE id NOT LIKE 'theme-%'"
                            ).fetchall()
        errors = db.execute("SELECT message FROM harvest_error").fetchall()
        outcome = (f"published {counts[0][0]:,} features" if counts else "not published") + (
            f"; error: {errors[0][0][:90]}" if errors else "")
    elif stderr:
        outcome = stderr.strip().splitlines()[-1][:120]
    # ru_maxrss of wait4: the larger of the process's own peak and its largest child's.
    return seconds, usage.ru_maxrss * 1024, proc.returncode, outcome, peak[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bomb-gib", type=float, default=1.5)
    parser.add_argument("--csv-mb", type=int, default=500)
    parser.add_argument("--json-mb", type=int, default=300)
    parser.add_argument("--geojson-mb", type=int, default=1024)
    parser.add_argument("--only", nargs="*", default=["bomb", "csv", "json", "geojson"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="where inputs are made and kept (default: a temporary directory)")
    parser.add_argument("--make-only", action="store_true", help="generate inputs, no harvest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "small.csv").write_bytes((REPO / "tests/data/csv/yaizu_222127_aed.csv")
                                           .read_bytes())
        makers = {"bomb": ("bomb.zip", lambda p: make_bomb(p, args.bomb_gib)),
                  "csv": ("points.csv", lambda p: make_csv(p, args.csv_mb)),
                  "json": ("member.zip", lambda p: make_json_member(p, args.json_mb)),
                  "geojson": ("areas.geojson", lambda p: make_geojson(p, args.geojson_mb)),
                  "records": ("records.zip", lambda p: make_records_member(p, args.json_mb))}
        if args.make_only:
            for name in args.only:
                filename, make = makers[name]
                if not (folder / filename).exists():
                    make(folder / f"{filename}.part")
                    (folder / f"{filename}.part").rename(folder / filename)
            return 0
        base = harvest(folder, "baseline", "small.csv")
        print(f"{'case':9} {'file MB':>9} {'seconds':>8} {'peak RSS MB':>12} {'× baseline':>11}"
              f" {'tree MB':>8}  outcome", flush=True)
        print(f"{'baseline':9} {(folder / 'small.csv').stat().st_size / MB:>9.2f} "
              f"{base[0]:>8.1f} {base[1] / MB:>12.0f} {1:>11.2f} {base[4] / MB:>8.0f}  {base[3]}",
              flush=True)
        worst = 0
        for name in args.only:
            filename, make = makers[name]
            path = folder / filename
            t0 = time.monotonic()
            if not (args.dir and path.exists()):
                make(path)
            made = time.monotonic() - t0
            seconds, rss, code, outcome, tree = harvest(folder, name, filename)
            worst = max(worst, rss, tree)
            print(f"{name:9} {path.stat().st_size / MB:>9.1f} {seconds:>8.1f} {rss / MB:>12.0f} "
                  f"{rss / base[1]:>11.2f} {tree / MB:>8.0f}  exit {code}, {outcome} "
                  f"(input made in {made:.0f} s)", flush=True)
            if not args.dir:
                path.unlink()
        print(f"(tree MB: the process and its children together, sampled every 0.25 s)")
        print(f"worst peak RSS {worst / MB:.0f} MB: {'under' if worst < 1024 ** 3 else 'OVER'} "
              f"the 1 GB budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
