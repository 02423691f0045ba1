"""Harvest locks held by another process (store.locks) in both modes: an flock in the data dir,
or a PostgreSQL advisory lock that another machine would see the same way. The holder is named,
the staff pages tell a live job from a dead one by it, and its death frees it at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import text

from catalog.app import create_app
from harvesters.runner import summary
from store import locks
from store.db import HarvestJob, Store, utcnow
from tests.accounts import sysadmin_headers
from tests.servers import REPO, FakeCKAN, package
from tests.ngsi_servers import run, source

HOLDER = textwrap.dedent("""
    import sys, time
    from store.db import Store
    from store import locks
    with locks.exclusive(Store(sys.argv[1]), sys.argv[2]):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold(data_dir, name):
    """Another process holding the lock (as a harvest on another machine would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), name], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_of_another_process_is_seen_named_and_freed_by_its_death(data_dir):
    store = Store(data_dir)
    with store.session() as s, s.begin():
        s.add(HarvestJob(source_name="fw", status="running", heartbeat_at=utcnow()))
    app = create_app(data_dir)
    proc = _hold(data_dir, "fw")
    try:
        assert locks.held(store, "fw") and not locks.held(store, "other")
        with pytest.raises(locks.SourceLocked, match=f"'fw' is being harvested by another "
                                                     rf"process \(.*pid {proc.pid}\)"):
            with locks.exclusive(store, "fw"):
                pass
        with locks.exclusive(store, "other"):  # other names are free
            pass
        with app.test_client() as client:
            page = client.get("/harvest", headers=sysadmin_headers(data_dir)).get_data(as_text=True)
        assert "実行中" in page and "異常終了" not in page
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up: as a crash or a lost machine
        proc.wait()
    # The kernel (flock) or the server (the session ended) released it.
    for _ in range(50):
        if not locks.held(store, "fw"):
            break
        import time
        time.sleep(0.1)
    assert not locks.held(store, "fw")
    with app.test_client() as client:
        page = client.get("/harvest", headers=sysadmin_headers(data_dir)).get_data(as_text=True)
    assert "異常終了" in page
    with locks.exclusive(store, "fw"):
        pass


def test_waiting_for_a_lock(data_dir):
    """The theme-layer rebuild waits for another process's rebuild instead of failing."""
    store = Store(data_dir)
    proc = _hold(data_dir, "theme-layers")
    try:
        with pytest.raises(locks.SourceLocked):
            with locks.exclusive(store, "theme-layers"):
                pass
    finally:
        proc.terminate()
    with locks.exclusive(store, "theme-layers", wait=True):  # returns once the holder is gone
        assert locks.held(store, "theme-layers")
    proc.wait()


@pytest.mark.pg_only(reason="an flock cannot be lost while its process lives; a database "
                            "connection can (a failover, a network cut)")
def test_a_harvest_whose_lock_connection_is_lost_stops(fixture_files, data_dir):
    """Once the server has dropped the lock, another machine may harvest the source: this job
    stops after the dataset in hand, recorded as failed with the reason."""
    store = Store(data_dir)
    pkgs = [package(f"shelters-{i}", f"避難所 その{i}", [("kakogawa_bom.csv", "CSV")])
            for i in range(5)]

    def cut(_name):
        if site.files_served == 2:
            with store.engine.begin() as conn:
                n = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :me"), {"me": f"renkei {os.uname().nodename} "
                                                            f"pid {os.getpid()}"}).scalar()
            assert n == 1

    site = FakeCKAN(pkgs, fixture_files, max_rows=10)
    site.files_served = 0

    def on_file(name):
        site.files_served += 1
        cut(name)

    site.on_file = on_file
    with site.running() as url:
        (report,), _ = run(data_dir, source("hyogo-ckan", "ckan", url, organization=None,
                                            rows=100))
    assert report.status == "failed"
    assert "source's lock was lost" in summary([report])
    assert report.counts["added"] == 2
    with store.session() as s:
        (job,) = s.query(HarvestJob).all()
        assert job.status == "failed"
    assert not locks.held(store, "hyogo-ckan")
