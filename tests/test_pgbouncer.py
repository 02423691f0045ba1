"""renkei behind a real PgBouncer in transaction mode (issue 14): two `renkei serve` processes
(2 workers each, a pool of their own larger than PgBouncer's) and harvests all connect through
one PgBouncer whose pool holds 3 server connections. Under concurrent requests every answer is
right and PostgreSQL never sees more than those 3 connections; and harvest locks still exclude
each other, which session-level advisory locks would not (the server connection that took one
goes back to the pool and to other clients)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from store import locks
from store.db import Store
from tests import pg_mode, pgbouncer
from tests.servers import REPO, renkei_serve
from tests.test_security_serve import harvest
from tests.test_stateless_servers import DATASET, sources, view

pytestmark = pytest.mark.pg_only(reason="PgBouncer pools connections to PostgreSQL")
POOL = 3

HOLDER = ("import sys, time\nfrom store.db import Store\nfrom store import locks\n"
          "with locks.exclusive(Store(sys.argv[1]), 'shared-files'):\n"
          "    print('held', flush=True)\n    time.sleep(120)\n")


def test_two_servers_and_harvests_through_pgbouncer_stay_in_its_pool(tmp_path, monkeypatch):
    run_url = os.environ["RENKEI_TEST_RUN_DATABASE"]
    shared = tmp_path / "shared"
    pg_mode.url_for(run_url, shared)   # makes the schema PgBouncer's connections use
    with pgbouncer.running(run_url, pg_mode.schema_for(shared), pool_size=POOL) as bouncer:
        monkeypatch.setenv("RENKEI_DATABASE_URL", bouncer)
        # Each worker may open 2 + 2: 16 client connections against PgBouncer's 3.
        monkeypatch.setenv("RENKEI_DB_POOL_SIZE", "2")
        monkeypatch.setenv("RENKEI_DB_MAX_OVERFLOW", "2")
        # Web servers without data dirs: their secrets come from here.
        monkeypatch.setenv("RENKEI_SECRET_KEY", "pgbouncer-test-session-secret")
        monkeypatch.setenv("RENKEI_TOKEN_SECRET", "pgbouncer-test-token-secret")
        web_a, web_b, harvester = tmp_path / "web-a", tmp_path / "web-b", tmp_path / "harvester"
        assert harvest(harvester, sources(tmp_path / "src", with_file=True)).returncode == 0
        peak, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], pgbouncer.server_connections(run_url))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with renkei_serve(web_a, workers=2) as (a, _), renkei_serve(web_b, workers=2) as (b, _):
                want = view(a)
                assert sorted(want[c]["matched"] for c in want["collections"]) == [5, 40]
                assert want["search"] == [DATASET]
                with ThreadPoolExecutor(8) as pool:
                    seen = list(pool.map(view, [a, b] * 6))
                    # Then a republish of the same files (unchanged: the same answers).
                    assert harvest(harvester, sources(tmp_path / "src", with_file=True)
                                   ).returncode == 0
                assert all(v == want for v in seen)

                # A harvest holding the source's lock through PgBouncer, while the servers
                # keep PgBouncer's server connections busy: a second one is refused.
                holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(harvester)],
                                          cwd=REPO, stdout=subprocess.PIPE, text=True)
                try:
                    assert holder.stdout.readline().strip() == "held"
                    with ThreadPoolExecutor(6) as pool:
                        assert all(v == want for v in pool.map(view, [a, b] * 3))
                    second = harvest(harvester, sources(tmp_path / "src", with_file=False),
                                     check=False)
                    assert second.returncode != 0
                    assert "is being harvested by another process" in second.stderr
                    assert f"pid {holder.pid}" in second.stderr
                    store = Store(tmp_path / "other-harvester")
                    assert locks.held(store, "shared-files")
                    with pytest.raises(locks.SourceLocked):
                        with locks.exclusive(store, "shared-files"):
                            pass
                    assert view(b) == want   # the refused harvest withdrew nothing
                finally:
                    holder.kill()
                    holder.wait()
                deadline = time.monotonic() + 10   # its death frees the lock
                while locks.held(store, "shared-files") and time.monotonic() < deadline:
                    time.sleep(0.2)
                with locks.exclusive(store, "shared-files"):
                    pass
        finally:
            stop.set()
            sampler.join(5)
    assert 1 <= peak[0] <= POOL
