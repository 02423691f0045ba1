"""Metering benchmark of issue 13 (prints figures; never part of the tests).

Harvests the bundled demo into a temporary data dir, then builds two apps on it in this one
process — metering on and metering off — and asks each, interleaved (on, off, on, off, …, so
both see the same machine load), through Flask's test client:
  (a) /ogcapi/collections/<largest>/items?f=json&limit=1000
  (b) /datasets?q=避難  (a search page: not metered, the hook only classifies the path)
It prints the median of each, the added median latency (on − off), and the hook's own cost
measured directly (before + after on a finished response, median of many calls), which is far
less noisy on a shared machine than a difference of two medians. Then the writer: N synthetic
events pushed through the queue and written by flush(), in events per second.

    PYTHONPATH=. python bench/metering_bench.py [--runs 200] [--events 100000]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def harvest(data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config",
                           str(ROOT / "catalog" / "examples" / "sources.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr)


def timed(client, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url)
    r.get_data()
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, (url, r.status_code)
    return elapsed * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from catalog.app import create_app
    from store.db import Store
    tmp = Path(tempfile.mkdtemp(prefix="renkei-meter-bench-"))
    data_dir = tmp / "data"
    harvest(data_dir)
    store = Store(data_dir)
    largest = max(store.active_collections(), key=lambda c: c.feature_count)
    on = create_app(data_dir)   # the writer thread as in production: every 1 s or 500 events
    off = create_app(data_dir, config={"RENKEI_METERING": False})
    # Rate limits would refuse a benchmark: the same generous limit on both.
    for app in (on, off):
        app.extensions["renkei_limiter"].enabled = False
    urls = {"items?limit=1000": f"/ogcapi/collections/{largest.id}/items?f=json&limit=1000",
            "search page": "/datasets?q=%E9%81%BF%E9%9B%A3"}
    clients = {"on": on.test_client(), "off": off.test_client()}
    print(f"collection {largest.id}: {largest.feature_count} features; {args.runs} runs each, "
          "interleaved")
    for name, url in urls.items():
        for c in clients.values():
            for _ in range(5):
                timed(c, url)               # warm caches, OGC API build, search index
        times = {"on": [], "off": []}
        for _ in range(args.runs):
            for mode in ("on", "off"):
                times[mode].append(timed(clients[mode], url))
        m_on, m_off = statistics.median(times["on"]), statistics.median(times["off"])
        print(f"{name:18} median on {m_on:8.3f} ms  off {m_off:8.3f} ms  "
              f"added {m_on - m_off:+.3f} ms ({(m_on / m_off - 1) * 100:+.1f} %)")
        # The hook alone, on a response like the real one (same body), in a request context.
        resp = clients["off"].get(url)
        body = resp.get_data()
        meter = on.extensions["renkei_meter"]
        costs = []
        from flask import Response, g
        for _ in range(args.runs * 5):
            with on.test_request_context(url):
                g.principal = None
                r = Response(body, status=200, mimetype=resp.mimetype)
                t0 = time.perf_counter()
                meter.before()
                meter.after(r)
                costs.append((time.perf_counter() - t0) * 1000)
        meter.queue.clear()
        print(f"{'':18} hook alone median {statistics.median(costs) * 1000:8.1f} µs "
              f"(p90 {sorted(costs)[int(len(costs) * 0.9)] * 1000:.1f} µs)")
    on.extensions["renkei_meter"].flush()
    # The writer: synthetic events straight into the queue of a meter of its own (no background
    # thread competing), written by flush() in batches of the production size.
    from catalog.metering import Meter
    meter = Meter(on, on.extensions["renkei_store"])
    path = urls["items?limit=1000"].split("?")[0]
    now = time.time()
    meter._pid = __import__("os").getpid()    # as if its thread were running: none is started
    for i in range(args.events):
        meter.queue.append((now, (None, None, ()), path, None, 200, 12345, 1000, 3.2))
    pending = list(meter.queue)
    meter.queue.clear()
    t0 = time.perf_counter()
    written = 0
    for start in range(0, len(pending), meter.batch):
        meter.queue.extend(pending[start:start + meter.batch])
        written += meter.flush()
    elapsed = time.perf_counter() - t0
    print(f"writer: {written} events in {elapsed:.2f} s = {written / elapsed:,.0f} events/s "
          f"(SQLite, batches of {meter.batch}, dataset ids resolved)")


if __name__ == "__main__":
    main()
