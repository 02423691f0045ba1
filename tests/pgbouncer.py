"""A real PgBouncer (Debian's 1.18, `apt-get install pgbouncer`; .ci/run installs it) in front of
the test run's database, in transaction mode with a small pool, on a free port of its own.

PgBouncer 1.18 refuses the `options` startup parameter the test mode uses to give each data dir
its schema, so its database entry sets the search path on every server connection it opens
(connect_query); clients name the pooled database `renkei` with no options. It reaches
PostgreSQL over the Unix socket, so its server connections are the run database's backends
with no client address: `server_connections` counts them in pg_stat_activity, independently of
what PgBouncer reports about itself.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from tests.servers import free_port

SOCKET_DIR = "/var/run/postgresql"


def binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer"
                                          if os.path.exists("/usr/sbin/pgbouncer") else None)
    assert found, "PgBouncer is missing: apt-get install pgbouncer (.ci/run does)"
    return found


@contextmanager
def running(run_url: str, schema: str, pool_size: int = 3):
    """Yields the URL clients use (transaction pooling, at most `pool_size` server connections)."""
    target = urlsplit(run_url)
    dbname, port = target.path.lstrip("/"), target.port or 5432
    user = target.username or "postgres"
    folder = Path(tempfile.mkdtemp(prefix="renkei-pgbouncer-"))
    listen = free_port()
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"renkei = host={SOCKET_DIR} port={port} dbname={dbname} user={user} "
        f"connect_query='SET search_path TO {schema}, public'\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\nadmin_users = {user}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\nmax_db_connections = {pool_size}\n"
        "min_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 500\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n")
    command = [binary()]
    if os.geteuid() == 0:   # PgBouncer will not run as root: as the postgres user
        owner = pwd.getpwnam("postgres")
        for path in [folder, *folder.iterdir()]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command += ["-u", "postgres"]
    proc = subprocess.Popen([*command, str(folder / "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"postgresql://{user}@127.0.0.1:{listen}/renkei"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(url, connect_timeout=2) as con:
                    con.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                log = folder / "pgbouncer.log"
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PgBouncer did not start: " + proc.stderr.read()
                                       + (log.read_text() if log.exists() else ""))
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def server_connections(run_url: str) -> int:
    """Backends of the run's database opened through the Unix socket: PgBouncer's."""
    with psycopg.connect(run_url, autocommit=True) as con:
        return con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND client_addr IS NULL "
            "AND pid <> pg_backend_pid()").fetchone()[0]
