"""Start-up cost of Store() (tests and web workers make many): a new database (every migration
runs) and one at head (one revision check), embedded and, with --pg URL, in PostgreSQL (a schema
of its own per store, dropped at the end). Prints the median and p95 in ms.

    .venv/bin/python bench/store_startup.py [--n 30] [--pg postgresql://postgres@127.0.0.1/postgres]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from store.db import Store  # noqa: E402


def _timed(make) -> float:
    t = time.perf_counter()
    store = make()
    ms = (time.perf_counter() - t) * 1000
    store.engine.dispose()
    return ms


def _report(label: str, values: list[float]) -> None:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    print(f"{label:<32} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--pg", help="a PostgreSQL URL (a schema per store is made and dropped)")
    args = ap.parse_args()
    Store(tempfile.mkdtemp()).engine.dispose()  # imports and Alembic's script, once
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"s{i}" for i in range(args.n)]
        _report("embedded, new database", [_timed(lambda d=d: Store(d)) for d in dirs])
        _report("embedded, at head", [_timed(lambda d=d: Store(d)) for d in dirs])
        if not args.pg:
            return
        base = args.pg.replace("postgresql://", "postgresql+psycopg://", 1)
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        schemas = [f"bench_startup_{os.getpid()}_{i}" for i in range(args.n)]
        with admin.connect() as conn:
            for s in schemas:
                conn.execute(text(f'CREATE SCHEMA "{s}"'))
        try:
            urls = [f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{s}"
                    for s in schemas]

            def make(d, url):
                os.environ["RENKEI_DATABASE_URL"] = url
                return Store(d)

            _report("postgresql, new database", [_timed(lambda d=d, u=u: make(d, u))
                                                 for d, u in zip(dirs, urls)])
            _report("postgresql, at head", [_timed(lambda d=d, u=u: make(d, u))
                                            for d, u in zip(dirs, urls)])
        finally:
            with admin.connect() as conn:
                for s in schemas:
                    conn.execute(text(f'DROP SCHEMA "{s}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    main()
