"""PostgreSQL test mode: the whole suite against a real PostgreSQL/PostGIS server.

`RENKEI_TEST_DATABASE=postgresql://postgres@127.0.0.1:5432/postgres pytest` makes one database
for the run (with PostGIS), gives every data dir a test uses a schema of its own in it, and drops
the database at the end. Tests build stores from data dirs (`Store(data_dir)`, `renkei
--data-dir D …` in subprocesses), so the data dir is what tells one test's catalogue from
another's: `store.db.database_url` is wrapped to answer that data dir's schema, in this process
and, through this folder's sitecustomize on PYTHONPATH, in every Python subprocess. Everything
after the URL — engine, SQL, PostGIS — is the real code path. A test that names its own
RENKEI_DATABASE_URL (two servers sharing one database) gets exactly that.

Lives outside the `tests` package so that sitecustomize can import it before anything else.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SERVER_ENV = "RENKEI_TEST_DATABASE"      # where to make the run's database (a maintenance db)
RUN_ENV = "RENKEI_TEST_RUN_DATABASE"     # the run's database, for subprocesses
_made: set[str] = set()


def active() -> bool:
    return bool(os.environ.get(SERVER_ENV))


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))


def _connect(url: str):
    import psycopg
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def create_run_database() -> str:
    server = os.environ[SERVER_ENV]
    name = "renkei_test_" + secrets.token_hex(6)
    with _connect(server) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(server, name)
    with _connect(url) as con:
        con.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return url


def drop_run_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _connect(os.environ[SERVER_ENV]) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_for(data_dir) -> str:
    return "d_" + hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]


def _ensure_schema(run_url: str, schema: str) -> None:
    if schema in _made:
        return
    with _connect(run_url) as con, con.transaction():
        # Two processes of one test (a server and a harvest) may both be first.
        con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    _made.add(schema)


def url_for(run_url: str, data_dir) -> str:
    schema = schema_for(data_dir)
    _ensure_schema(run_url, schema)
    return run_url + f"?options=-csearch_path%3D{schema},public"


def install() -> None:
    """Point every data dir of this process at its own schema of the run's database."""
    run_url = os.environ.get(RUN_ENV)
    if not run_url:
        return
    # Hundreds of stores per run, each with its own engine: no idle pooled connections left
    # behind to exhaust max_connections (the pool itself is tested on its own).
    os.environ.setdefault("RENKEI_DB_POOL_SIZE", "0")
    # Superseded versions go at the switch unless a reader holds them, so tests can see them
    # gone; the grace period production keeps has tests of its own that set it.
    os.environ.setdefault("RENKEI_DROP_GRACE", "0")
    try:
        import store.db as db
    except ImportError:   # a Python subprocess that is not renkei (a fresh venv, a client)
        return
    if getattr(db.database_url, "_pg_test_mode", False):
        return
    configured = db.database_url

    def database_url(data_dir):
        if os.environ.get("RENKEI_DATABASE_URL"):
            return configured(data_dir)
        return url_for(run_url, data_dir)

    database_url._pg_test_mode = True
    db.database_url = database_url
