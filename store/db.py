"""The catalogue store: organizations, sources, datasets, resources, collections, harvest jobs.

SQLAlchemy over a SQLite file in the data dir by default; with `RENKEI_DATABASE_URL=
postgresql://…` everything lives in PostgreSQL (psycopg 3). The schema is Alembic's
(store.migrate). Nothing here imports Flask, so the harvest runner can use it too.

Connections in PostgreSQL mode (make_engine): a bounded pool per process,
RENKEI_DB_POOL_SIZE (default 5) + RENKEI_DB_MAX_OVERFLOW (default 5), so the budget is
servers × workers × (pool + overflow) (+ 1 per running harvest, for its source lock), which must
stay below the server's max_connections (or PgBouncer's pool). Statements are never prepared
server-side (`prepare_threshold=None`): PgBouncer before 1.21 cannot follow prepared statements
in transaction mode. With RENKEI_DATABASE_REPLICA_URL, GET requests read through a read replica
(Store.start_reading) while writes, metering and locks use the primary. GET sessions read
in autocommit (Store.session), so no request holds a transaction open while it asks for a
second connection; their explicit transactions (`with s.begin()`) are real ones on the primary.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, create_engine,
                        event, select)
from sqlalchemy.pool import NullPool
from sqlalchemy.orm import (Mapped, Session, contains_eager, mapped_column, relationship,
                            sessionmaker)

from store.base import Base, utcnow  # noqa: F401 (re-exported: callers import them from here)
from store import accounts  # noqa: F401 (its tables join Base.metadata before create_all)
from store import originals, outbox, terms, usage  # noqa: F401 (so do these; store.applications needs Organization,
# so it cannot be imported here: whoever uses it imports it before making a Store)


class Organization(Base):
    __tablename__ = "organization"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name_ja: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(6))  # 全国地方公共団体コード
    # When the catalogue first recorded it (CKAN's organization `created`).
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str | None] = mapped_column(String(20))  # prefecture|municipality|partner|company
    upload_limit: Mapped[int | None] = mapped_column(Integer)  # bytes per uploaded file; None: default


class Source(Base):
    __tablename__ = "source"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(Text)
    organization_id: Mapped[str | None] = mapped_column(String(100))
    last_success: Mapped[datetime | None] = mapped_column(DateTime)
    last_failure: Mapped[datetime | None] = mapped_column(DateTime)


class Dataset(Base):
    __tablename__ = "dataset"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_name: Mapped[str] = mapped_column(String(100), index=True)
    remote_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))  # the remote slug (CKAN `name`)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    theme: Mapped[str | None] = mapped_column(String(50))
    license_id: Mapped[str | None] = mapped_column(String(100))
    license_title: Mapped[str | None] = mapped_column(Text)
    license_url: Mapped[str | None] = mapped_column(Text)
    organization_id: Mapped[str | None] = mapped_column(String(100), index=True)
    issued: Mapped[str | None] = mapped_column(String(40))
    modified: Mapped[str | None] = mapped_column(String(40))  # remote metadata_modified
    landing_page: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="active")
    # public | members | organization: who may read it (store.access decides, every read path asks)
    access_level: Mapped[str] = mapped_column(String(20), default="public")
    raw: Mapped[dict] = mapped_column(JSON, default=dict)  # source metadata, for provenance
    metadata_hash: Mapped[str | None] = mapped_column(String(64))
    bbox: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # our last change

    resources: Mapped[list["Resource"]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="Resource.position")
    collections: Mapped[list["Collection"]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="Collection.id")


class Resource(Base):
    __tablename__ = "resource"
    id: Mapped[str] = mapped_column(String(250), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    remote_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(40))  # as declared by the source
    detected_format: Mapped[str | None] = mapped_column(String(40))
    size: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    encoding: Mapped[str | None] = mapped_column(String(20))
    sha256: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)  # HTTP Last-Modified
    remote_modified: Mapped[str | None] = mapped_column(String(40))  # CKAN last_modified
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # ok | table | error | other
    message: Mapped[str | None] = mapped_column(Text)  # why it is not published
    preview: Mapped[dict | None] = mapped_column(JSON)  # {"columns": [...], "rows": [[...]]}
    quality: Mapped[dict | None] = mapped_column(JSON)  # per-layer read report

    dataset: Mapped[Dataset] = relationship(back_populates="resources")


class Collection(Base):
    __tablename__ = "collection"
    id: Mapped[str] = mapped_column(String(250), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    resource_id: Mapped[str] = mapped_column(String(250))
    layer_name: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[list] = mapped_column(JSON, default=list)
    path: Mapped[str] = mapped_column(Text)  # relative to the data dir
    layer: Mapped[str] = mapped_column(String(100), default="features")
    feature_count: Mapped[int] = mapped_column(Integer, default=0)
    bbox: Mapped[list | None] = mapped_column(JSON)
    fields: Mapped[dict | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="active")
    published_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="collections")


class HarvestJob(Base):
    __tablename__ = "harvest_job"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_name: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|done|failed
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # last sign of life
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)

    errors: Mapped[list["HarvestError"]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="HarvestError.id")


class HarvestError(Base):
    __tablename__ = "harvest_error"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("harvest_job.id"), index=True)
    # enumerate | fetch | translate | publish | withdraw | theme-layers
    stage: Mapped[str] = mapped_column(String(20))
    dataset: Mapped[str | None] = mapped_column(Text)
    resource: Mapped[str | None] = mapped_column(Text)
    row: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)  # for staff; never printed to a terminal

    job: Mapped[HarvestJob] = relationship(back_populates="errors")


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def database_url(data_dir: Path) -> str:
    return os.environ.get("RENKEI_DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'catalogue.db'}"


def replica_url() -> str | None:
    return os.environ.get("RENKEI_DATABASE_REPLICA_URL") or None


def is_postgresql(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def make_engine(url: str):
    """The engine of one database URL. SQLite: a file beside the data. PostgreSQL: psycopg 3
    whatever driver the URL names, a bounded pool, and no server-side prepared statements, which
    PgBouncer in transaction mode cannot keep (a statement prepared on one server connection is
    missing on the next)."""
    if not is_postgresql(url):
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    rest = url.split("://", 1)[1]
    size = _int_env("RENKEI_DB_POOL_SIZE", 5)
    # servers × workers × (pool + overflow) must stay under max_connections (or PgBouncer's
    # pool): the defaults keep a 2-server, 4-worker site at 80. 0: no pool of our own, a
    # connection per checkout, for sites whose PgBouncer is the pool. A checkout past the
    # budget waits RENKEI_DB_POOL_TIMEOUT seconds, then fails: the budget is never exceeded.
    # pre-ping and recycle: a restart, a failover or PgBouncer closing idle links never hands
    # out a dead connection, and none lives for days (pygeoapi#2344).
    pool = ({"poolclass": NullPool} if size == 0 else
            {"pool_size": size, "max_overflow": _int_env("RENKEI_DB_MAX_OVERFLOW", 5),
             "pool_timeout": _int_env("RENKEI_DB_POOL_TIMEOUT", 30),
             "pool_pre_ping": True, "pool_recycle": 1800})
    return create_engine("postgresql+psycopg://" + rest,
                         connect_args={"prepare_threshold": None}, **pool)


# Set for the duration of a GET request (catalog.app): sessions and searches read through the
# replica engine. A contextvar, so each gthread worker thread has its own.
_reading = ContextVar("renkei_read_replica", default=False)


_PUBLISH_SEQ = "SELECT value FROM meta WHERE key = 'publish_seq'"


class Store:
    """One per process: the engines, a session factory and the publish counter."""

    def __init__(self, data_dir: Path | str, make_dir: bool = True):
        self.data_dir = Path(data_dir)
        url = database_url(self.data_dir)
        # A web server or an operator's command in PostgreSQL mode (make_dir=False) creates no
        # data dir and needs none: secrets from the environment; terms, the mail outbox and the
        # validated sources in the database.
        if make_dir or not is_postgresql(url):
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        replica = replica_url()
        # The primary unless a replica is configured: callers never need to ask which.
        self.replica_engine = make_engine(replica) if replica else self.engine
        from store.migrate import ensure_schema
        ensure_schema(self.engine, self.data_dir)
        from store.search import SearchIndex  # search tables live beside the catalogue
        self.search = SearchIndex(self.engine, self.read_engine)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        # GET sessions run each statement in its own transaction (READ COMMITTED gives every
        # statement its own snapshot anyway): a request reading the catalogue never sits idle
        # in a transaction while it opens another connection (a feature table, a search). In
        # a transaction that would pin one server connection and wait for a second; through
        # PgBouncer in transaction mode, or a full pool, enough such requests at once wait on
        # each other until they time out.
        self._read_autocommit = (self.replica_engine.execution_options(
            isolation_level="AUTOCOMMIT") if self.postgresql else None)
        db = self.engine.url.database if not self.postgresql else None
        self._sqlite_file = db if db and db != ":memory:" and not db.startswith("file:") else None
        self._per_thread = threading.local()

    @property
    def postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def read_engine(self):
        """The engine reads of the current request go through (the replica during a GET)."""
        return self.replica_engine if _reading.get() else self.engine

    @staticmethod
    def start_reading():
        """From now on in this thread (context), reads go through the replica, if there is one:
        a GET request (catalog.app). Returns the token for stop_reading."""
        return _reading.set(True)

    @staticmethod
    def stop_reading(token) -> None:
        _reading.reset(token)

    def session(self) -> Session:
        if self._read_autocommit is not None and _reading.get():
            s = _ReadSession(bind=self._read_autocommit, expire_on_commit=False)
            s.write_bind = self.engine
            return s
        return self.Session(bind=self.read_engine())

    def publish_version(self) -> str:
        """A token that changes with every publish: web workers compare it on each request.
        Through the driver's own cursor (SQLite: a connection of this thread's own): every OGC
        API request asks, and SQLAlchemy's statement and pool machinery around this one-row
        read cost several times the read (issue 17)."""
        if self._sqlite_file is not None:
            row = self._thread_sqlite().execute(_PUBLISH_SEQ).fetchone()
            return (row[0] if row else None) or "0"
        con = self.read_engine().raw_connection()
        try:
            cur = con.cursor()
            try:
                cur.execute(_PUBLISH_SEQ)
                row = cur.fetchone()
            finally:
                cur.close()
        finally:
            con.close()
        return (row[0] if row else None) or "0"

    def _thread_sqlite(self) -> sqlite3.Connection:
        """This thread's own connection to the SQLite catalogue, for one-statement reads
        (autocommit: each read sees the last commit, and WAL never blocks it). Opened in the
        process that uses it, so none crosses a fork (gunicorn workers); it closes with its
        thread or with this Store."""
        mine = self._per_thread
        if getattr(mine, "pid", None) != os.getpid():
            mine.con = sqlite3.connect(self._sqlite_file, timeout=60, isolation_level=None)
            mine.pid = os.getpid()
        return mine.con

    @staticmethod
    def bump_version(session: Session) -> None:
        row = session.get(Meta, "publish_seq")
        if row is None:
            session.add(Meta(key="publish_seq", value="1"))
        else:
            row.value = str(int(row.value) + 1)

    def active_collections(self) -> list[Collection]:
        with self.session() as s:
            # The dataset (its theme) comes along: callers read it after the session closes.
            stmt = (select(Collection).join(Dataset)
                    .where(Collection.status == "active", Dataset.status == "active")
                    .options(contains_eager(Collection.dataset))
                    .order_by(Collection.id))
            return list(s.scalars(stmt))


class _ReadSession(Session):
    """A GET request's session: what it reads by itself (autobegin) runs in autocommit through
    the read engine; an explicit `begin()` (a write a GET makes: a sign-in, a quota notice) is a
    real transaction on the primary, as outside a GET."""
    write_bind = None

    def begin(self, nested: bool = False):
        if not self.in_transaction() and self.write_bind is not None:
            self.bind = self.write_bind
        return super().begin(nested=nested)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the web workers read while a harvest writes; busy_timeout covers the switch.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()

