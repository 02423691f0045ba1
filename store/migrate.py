"""Schema migrations: Alembic revisions shipped as package data (store/migrations), run in-process.

`renkei db upgrade` runs them; so does every Store() at start-up (ensure_schema), because
the embedded mode has no operator step (a town upgrades renkei and restarts it) and the
tests make hundreds of stores. At start-up the cost is one query when the database is at
head. Otherwise the upgrade runs under a lock, so web workers and a harvest starting together
upgrade once: an flock beside the SQLite file, `pg_advisory_xact_lock` in PostgreSQL (held by
the migration's own transaction: PostgreSQL's DDL is transactional, so a failed upgrade
leaves the previous schema whole). A database at a revision this code does not know was
upgraded by a newer renkei: Store() refuses to start rather than run old code on it.

A database made before Alembic (tables, no alembic_version) is brought up by the baseline
revision, which creates only what is missing, and stamped; it is never recreated.
"""
from __future__ import annotations

import fcntl
import functools
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in store/migrations/versions, written here so that a start at head does
# not load Alembic at all (half a second per process on a busy machine); a new revision updates
# it (tests/test_migrations.py checks it against Alembic's own view).
HEAD = "0002"


class SchemaError(RuntimeError):
    """The database cannot be used by this version of renkei (said in the message)."""


def _config():
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def _script():
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(_config())


def head() -> str:
    return _script().get_current_head()


def current(conn) -> str | None:
    """The database's revision; None before Alembic (or an empty database). Asks whether the
    table exists first: a failed statement would end the caller's transaction."""
    if conn.dialect.name == "postgresql":
        exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
    else:
        exists = conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                   "AND name = 'alembic_version'")).scalar()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:  # alembic raises ResolutionError/CommandError subclasses for unknown ids
        return False


@contextmanager
def _file_lock(data_dir: Path | None):
    if data_dir is None:
        yield
        return
    with open(Path(data_dir) / ".schema.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def upgrade(engine, data_dir: Path | None = None) -> tuple[str | None, str]:
    """Bring the database to head under the lock; (revision before, revision after)."""
    sqlite = engine.dialect.name == "sqlite"
    with (_file_lock(data_dir) if sqlite else nullcontext()), engine.begin() as conn:
        if not sqlite:
            # Per schema: several catalogues may share one database (the tests do).
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('renkei-schema ' "
                              "|| current_schema()))"))
        before = current(conn)
        if before == head():
            return before, before
        if before is not None and not _known(before):
            raise SchemaError(
                f"the database is at schema revision {before}, which this version of renkei "
                f"does not know (its newest is {head()}): it was upgraded by a newer renkei; "
                "run that version, or restore a backup taken before the upgrade")
        from alembic import command
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        return before, current(conn)


def ensure_schema(engine, data_dir: Path | None = None) -> None:
    """At start-up: one query when at head, else upgrade() (which re-checks under the lock)."""
    try:
        with engine.connect() as conn:
            rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no such table: a new database, or one from before Alembic
        rev = None
    if rev != HEAD:
        upgrade(engine, data_dir)
