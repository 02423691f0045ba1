"""NGSI v2 harvest of 50,000 entities: entities/s and peak RSS, full and unchanged re-harvest.

    python bench/ngsi_bench.py [--entities 50000]

A fixture Orion on 127.0.0.1 (tests/ngsi_servers.FakeOrion, pages of 1000) serves the 82
real GSI 指定緊急避難場所 of 加古川市 repeated with unique ids and points spread over the city.
Each harvest is a `renkei harvest` subprocess; its peak RSS comes from wait4's rusage.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ngsi_servers import FakeOrion, gsi_sites  # noqa: E402
from tests.servers import live_server  # noqa: E402


def make_entities(n: int) -> list[dict]:
    base = gsi_sites()
    out = []
    for i in range(n):
        e = dict(base[i % len(base)])
        lon, lat = e["location"]["value"]["coordinates"]
        e = {**e, "id": f"urn:ngsi-ld:EvacuationSite:bench-{i:06d}",
             "location": {"type": "geo:json", "value": {
                 "type": "Point", "coordinates": [round(lon + (i % 97) * 1e-4, 6),
                                                  round(lat + (i % 89) * 1e-4, 6)]}}}
        out.append(e)
    return out


def harvest(data_dir: Path, config: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "harvest", "--config", str(config), "--timeout", "120"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"harvest failed ({code}):\n{err[-2000:]}")
    return seconds, usage.ru_maxrss, code  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=50_000)
    args = parser.parse_args()
    orion = FakeOrion(make_entities(args.entities))
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, live_server(orion.app) as url:
        data_dir, config = Path(tmp) / "data", Path(tmp) / "sources.yaml"
        config.write_text(f"sources:\n  - name: bench\n    type: ngsi-v2\n    url: {url}\n"
                          f"    allow_private_networks: true\n"
                          f"    service: kakogawa\n    entity_types: [EvacuationSite]\n"
                          f"    time_limit: 3600\n", encoding="utf-8")
        print(f"NGSI v2 harvest of {args.entities:,} entities (pages of 1000), Python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")
        for label in ("full harvest", "unchanged re-harvest"):
            seconds, rss_kib, _ = harvest(data_dir, config)
            print(f"{label:22} {seconds:7.2f} s  {args.entities / seconds:9,.0f} entities/s  "
                  f"peak RSS {rss_kib / 1024:7.1f} MiB")


if __name__ == "__main__":
    main()
