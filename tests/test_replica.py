"""Read replicas (RENKEI_DATABASE_REPLICA_URL): GET requests read through the replica, writes,
metering and locks go to the primary. The replica here is a real PostgreSQL session that cannot
write (default_transaction_read_only=on) on the same data: a write sent to it fails, so pages
that answer prove nothing of theirs writes through it, and the statements each engine ran show
where the reads went. And the pool stays within its budget."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import event, text
from werkzeug.serving import make_server

import store.db
from catalog.app import create_app
from store.db import Store, make_engine
from tests.accounts import add_user, token
from tests.servers import FakeCKAN
from tests.test_ckan_api import PACKAGES
from tests.test_harvest_ckan import harvest, write_config

pytestmark = pytest.mark.pg_only(reason="replicas and pools are PostgreSQL's")

WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP")


def _read_only(url: str) -> str:
    """The same database and schema, in sessions that refuse every write (a standby's rule)."""
    assert "options=" in url  # the test mode's search_path for this data dir
    return url + "%20-cdefault_transaction_read_only%3Don&application_name=renkei-replica"


@contextmanager
def served(data_dir):
    """create_app on a real port (as tests.test_ckan_api.renkei_server), with the app at hand."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    server.app = create_app(data_dir, base_url=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, server.app
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def harvested(fixture_files, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replica")
    site = FakeCKAN(PACKAGES, fixture_files, max_rows=4)
    with site.running() as site_url:
        result = harvest(tmp / "a", write_config(tmp / "a.yaml", site_url))
        assert result.returncode == 0, result.stderr
    return tmp / "a"


def test_get_requests_read_through_the_replica(harvested, monkeypatch):
    data_dir = harvested
    monkeypatch.setenv("RENKEI_DATABASE_REPLICA_URL", _read_only(store.db.database_url(data_dir)))
    primary_store = Store(data_dir)
    add_user(primary_store, "writer@pref.hyogo.example", sysadmin=True)
    write_token = token(primary_store, "writer@pref.hyogo.example", scope="write")
    seen = {"primary": [], "replica": []}
    with served(data_dir) as (url, app):
        app_store = app.extensions["renkei_store"]
        assert app_store.replica_engine is not app_store.engine
        for name, engine in (("primary", app_store.engine), ("replica", app_store.replica_engine)):
            event.listen(engine, "before_cursor_execute",
                         lambda c, cur, stmt, *a, name=name: seen[name].append(
                             (threading.current_thread().name, stmt)))
        with app_store.replica_engine.connect() as conn:  # it is a replica that cannot write
            with pytest.raises(Exception, match="read-only transaction"):
                conn.execute(text("UPDATE meta SET value = value"))
        seen["replica"].clear()

        auth = {"Authorization": "Bearer " + write_token}
        pkg = requests.get(f"{url}/api/3/action/package_show",
                           params={"id": "hyogo-ckan--evac-282103"}, timeout=30).json()["result"]
        for path in ("/", "/datasets?q=避難所", "/datasets?q=避", f"/datasets/{pkg['id']}",
                     "/organizations", "/api/3/action/package_search?q=避難",
                     "/api/3/action/organization_list", "/catalog.jsonld",
                     "/ogcapi/collections?f=json", "/?lang=en"):
            r = requests.get(url + path, timeout=60)
            assert r.status_code == 200, (path, r.text[:300])
        r = requests.get(f"{url}/harvest", headers=auth, timeout=60)  # jobs, locks (primary)
        assert r.status_code == 200
        reads = [s for _, s in seen["replica"] if s.lstrip().upper().startswith("SELECT")]
        assert any("search_doc" in s for s in reads) and any("FROM dataset" in s for s in reads)
        assert not [s for _, s in seen["replica"] if s.lstrip().upper().startswith(WRITES)]
        # The primary, in the requests' threads: only the token's check and its last use and
        # the harvest page's lock question; no catalogue read. (Metering writes from its own
        # thread, to the primary, and may look up dataset owners there.)
        catalogue = [s for thread, s in seen["primary"] if "process_request" in thread
                     and any(t in s for t in ("FROM dataset", "search_doc", "FROM collection"))]
        assert catalogue == []

        # A write goes to the primary (the replica would refuse it), and reads follow it.
        seen["primary"].clear()
        r = requests.post(f"{url}/api/3/action/package_create", headers=auth, timeout=60,
                          json={"name": "replica-check", "title": "レプリカ確認用データ",
                                "owner_org": pkg["organization"]["name"]})
        assert r.status_code == 200, r.text[:300]
        assert any(s.lstrip().upper().startswith("INSERT") for _, s in seen["primary"])
        r = requests.get(f"{url}/api/3/action/package_show", params={"id": "replica-check"},
                         timeout=30)
        assert r.json()["result"]["title"] == "レプリカ確認用データ"
        assert "replica-check" in requests.get(f"{url}/datasets?q=確認", timeout=30).text


def test_the_pool_never_exceeds_its_budget(tmp_path, monkeypatch):
    """pool + overflow connections at most, whatever the number of threads asking: the rest
    wait their turn (servers × workers × (pool + overflow) is the site's whole budget)."""
    monkeypatch.setenv("RENKEI_DB_POOL_SIZE", "2")
    monkeypatch.setenv("RENKEI_DB_MAX_OVERFLOW", "1")
    url = store.db.database_url(tmp_path) + "&application_name=renkei-pool-test"
    engine = make_engine(url)
    assert engine.dialect.driver == "psycopg"
    peak, lock, errors = [0], threading.Lock(), []

    def count():
        with engine.connect() as c:
            n = c.execute(text("SELECT count(*) FROM pg_stat_activity "
                               "WHERE application_name = 'renkei-pool-test'")).scalar()
            with lock:
                peak[0] = max(peak[0], n)
            c.execute(text("SELECT pg_sleep(0.05)"))

    def worker():
        try:
            for _ in range(5):
                count()
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert errors == [] and 2 <= peak[0] <= 3
    # And no statement is ever prepared server-side (PgBouncer in transaction mode).
    with engine.connect() as c:
        assert c.connection.dbapi_connection.prepare_threshold is None
        for _ in range(8):
            c.execute(text("SELECT 1 FROM pg_class WHERE relname = :k"), {"k": "x"})
        assert c.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
    engine.dispose()


def test_app_without_replica_reads_the_primary(tmp_path, monkeypatch):
    monkeypatch.delenv("RENKEI_DATABASE_REPLICA_URL", raising=False)
    app = create_app(tmp_path)
    s = app.extensions["renkei_store"]
    assert s.replica_engine is s.engine
