"""`renkei serve`: gunicorn with N workers, each building its own app (no shared state but disk).

Workers are gthread: each holds a pool of threads, one per client, and its main loop keeps
telling the arbiter it is alive. With sync workers one slow reader held a whole worker (two
made `/` time out), and a download slower than the timeout was killed mid-body; here a slow
client holds one thread, and the timeout only restarts a worker that is truly stuck.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):
    def __init__(self, factory, options: dict):
        self.factory, self.options = factory, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.factory()


def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 2,
          threads: int = 8, timeout: int = 120) -> int:
    from catalog.app import create_app
    data_dir = Path(data_dir).resolve()
    base_url = f"http://{host}:{port}"
    from store.db import database_url, is_postgresql
    stateless = is_postgresql(database_url(data_dir)) and not data_dir.is_dir()
    if stateless:
        # No data dir to keep secrets in: every worker would fail to boot; say why once.
        missing = [n for n in ("RENKEI_SECRET_KEY", "RENKEI_TOKEN_SECRET") if not os.environ.get(n)]
        if missing:
            print(f"renkei: {' and '.join(missing)} must be set to serve without a data "
                  f"directory ({data_dir} does not exist): the same values on every web server",
                  file=sys.stderr, flush=True)
            return 2
    if is_postgresql(database_url(data_dir)) and not os.environ.get("RENKEI_SMTP_URL"):
        print("renkei: RENKEI_SMTP_URL is not set: mail waits in the database's outbox "
              "(`renkei mail outbox`, `renkei mail send`)", file=sys.stderr, flush=True)
    if is_postgresql(database_url(data_dir)) and any((data_dir / "terms").glob("*.yaml")):
        # Read before PostgreSQL mode kept the terms in the database: say so, or they vanish.
        print("renkei: terms files in the data dir's terms/ are not read in PostgreSQL mode; "
              "publish them once with `renkei terms add FILE ...`", file=sys.stderr, flush=True)
    print(f"renkei: serving {data_dir} at {base_url}/  (OGC API: {base_url}/ogcapi/)",
          file=sys.stderr, flush=True)
    _Server(lambda: create_app(data_dir, base_url=base_url, make_dir=not stateless),
            {"bind": f"{host}:{port}", "workers": max(1, workers),
             "worker_class": "gthread", "threads": max(1, threads), "timeout": max(1, timeout),
             "keepalive": 5, "accesslog": "-", "errorlog": "-", "loglevel": "warning"}).run()
    return 0
