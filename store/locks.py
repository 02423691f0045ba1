"""Named locks between processes, on one machine or several: one harvest per source, one
theme-layer rebuild at a time.

Embedded mode: an flock on <data dir>/locks/<name>.lock, which the kernel drops when the
process dies (no stale lock after a crash); the holder writes its pid into the file.

PostgreSQL mode (harvests on other machines than the web servers, no shared disk): a
transaction-level advisory lock (pg_advisory_xact_lock), keyed by the schema and the name, taken
in a transaction of its own that stays open for the whole job on a connection of its own. A
transaction, not a session: through PgBouncer in transaction mode a session lock would stay on
whichever server connection ran the statement, which the pooler then hands to other clients
(they would "re-take" it, and the unlock would miss it); an open transaction keeps its server
connection to itself, directly or through any pooler, so exclusion holds either way. The
transaction writes nothing and runs at READ COMMITTED, so it holds no snapshot between its
statements and does not hold back VACUUM; it turns idle_in_transaction_session_timeout off for
itself (PgBouncer's idle_transaction_timeout must stay 0, its default, or above a harvest's
length). The server drops the lock when the transaction ends: the job finished, the process
died, or its machine vanished (TCP keepalives below, so within about a minute; PgBouncer closes
the server connection of a client that left mid-transaction). application_name, set for the
transaction, names the holder (host, pid) in pg_stat_activity. `Lock.alive()` tells a job that
its lock connection is gone (then another harvest may already have the source: the job stops).
Budget: one connection per running harvest, pinned for its length (a pooler's slot likewise).
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

# libpq TCP keepalives for the lock connection: a dead holder's lock is freed in ~1 minute.
_KEEPALIVES = "keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
_KEYS = "hashtext('renkei-lock ' || current_schema()), hashtext(:name)"


class SourceLocked(Exception):
    """Another process holds the lock (the message names it)."""


class Lock:
    def __init__(self, conn=None):
        self._conn = conn

    def alive(self) -> bool:
        """Still ours? (Always, for an flock: it lives as long as this process.)"""
        if self._conn is None:
            return True
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure of the connection means the lock is gone
            return False


@contextmanager
def exclusive(store, name: str, *, wait: bool = False, what: str = "is being harvested"):
    """Hold the lock `name` for the block; SourceLocked at once if taken (unless `wait`)."""
    if store.postgresql:
        with _advisory(store, name, wait, what) as lock:
            yield lock
    else:
        with _flock(store.data_dir, name, wait, what) as lock:
            yield lock


def held(store, name: str) -> bool:
    """Does some process hold `name` now? (The harvest pages: is a running job alive?)"""
    if store.postgresql:
        # Asked of the primary: a replica knows nothing of the primary's locks.
        with store.engine.connect() as conn:
            return _holder(conn, name) is not None
    path = Path(store.data_dir) / "locks" / f"{name}.lock"
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


@contextmanager
def _flock(data_dir: Path, name: str, wait: bool, what: str):
    folder = Path(data_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / f"{name}.lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip()
            raise SourceLocked(f"source {name!r} {what} by another process"
                               f"{f' (pid {holder})' if holder else ''}") from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield Lock()
    finally:
        fh.close()


def _holder(conn, name: str) -> str | None:
    """The application_name of the session holding `name` ('' if it set none), or None."""
    row = conn.execute(text(
        "SELECT coalesce(a.application_name, '') FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        # pg_locks shows the two int4 keys as oids (their unsigned bits).
        "AND l.classid = CAST(CAST(hashtext('renkei-lock ' || current_schema()) AS bigint) "
        "& 4294967295 AS oid) "
        "AND l.objid = CAST(CAST(hashtext(:name) AS bigint) & 4294967295 AS oid)"),
        {"name": name}).first()
    return None if row is None else row[0]


@contextmanager
def _advisory(store, name: str, wait: bool, what: str):
    url = store.engine.url
    sep = "&" if url.query else "?"
    # Its own connection, outside the pool: held for hours, and its end is the lock's end.
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool
    engine = create_engine(url.render_as_string(hide_password=False) + sep + _KEEPALIVES,
                           poolclass=NullPool, connect_args={"prepare_threshold": None})
    try:
        with engine.connect() as conn:
            try:
                me = f"renkei {socket.gethostname()} pid {os.getpid()}"[:63]
                conn.execute(text("SELECT set_config('application_name', :me, true), "
                                  "set_config('idle_in_transaction_session_timeout', '0', true)"),
                             {"me": me})
                if wait:
                    conn.execute(text(f"SELECT pg_advisory_xact_lock({_KEYS})"), {"name": name})
                elif not conn.execute(text(f"SELECT pg_try_advisory_xact_lock({_KEYS})"),
                                      {"name": name}).scalar():
                    holder = _holder(conn, name)
                    raise SourceLocked(f"source {name!r} {what} by another process"
                                       f"{f' ({holder})' if holder else ''}")
                yield Lock(conn)
            finally:
                try:
                    conn.rollback()   # ends the transaction: the lock with it
                except Exception:  # noqa: BLE001 - a lost connection has released it already
                    pass
    finally:
        engine.dispose()
