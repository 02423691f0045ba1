"""Schema migrations (store.migrate, Alembic revisions in store/migrations), in both modes: a new
database is made by the revisions and equals the models; a catalogue made before Alembic is
brought up in place, its rows kept; a database from a newer renkei is refused; a start-up at
head costs one revision check."""
from __future__ import annotations

import pytest
from sqlalchemy import MetaData, event, inspect, select, text
from sqlalchemy.engine import Engine

from store import applications  # noqa: F401 (its tables are among the models compared)
from catalog.cli import main
from store import migrate
from store.base import Base
from store.db import Dataset, Organization, Store
from store.search import _meta as search_meta, _meta_pg as search_meta_pg


def _models(dialect: str) -> MetaData:
    """Every table the code maps, as the migrations must have made them for this dialect."""
    md = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(md)
    for table in search_meta.tables.values():
        if table.name == "search_doc" and dialect == "postgresql":
            continue
        table.to_metadata(md)
    if dialect == "postgresql":
        search_meta_pg.tables["search_doc"].to_metadata(md)
    return md


def _ours(name, type_, *_args) -> bool:
    # FTS5's own tables (search_bigram and its shadows) are made by the baseline's raw DDL;
    # spatial_ref_sys is PostGIS's (in public, on the search path).
    return not (type_ == "table" and (name in ("alembic_version", "spatial_ref_sys")
                                      or name.startswith("search_bigram")))


def test_head_constant_is_alembics_head():
    assert migrate.HEAD == migrate.head()


def test_new_database_is_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    engine = Store(tmp_path).engine
    with engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "include_name": _ours})
        diffs = compare_metadata(ctx, _models(engine.dialect.name))
    assert diffs == []


def test_a_catalogue_from_before_alembic_is_upgraded_in_place(tmp_path):
    """As main made them until now: tables by create_all, columns added by hand since, no
    alembic_version. The baseline adds what is missing; rows stay; the revision is stamped."""
    store = Store(tmp_path)
    with store.session() as s, s.begin():
        s.add(Organization(id="kobe-city", name_ja="神戸市", code="281000"))
        s.add(Dataset(id="kobe-1", source_name="kobe", remote_id="1", name="parks",
                      title="公園一覧", organization_id="kobe-city"))
    with store.engine.begin() as conn:
        for ddl in ("ALTER TABLE organization DROP COLUMN kind",
                    "ALTER TABLE organization DROP COLUMN upload_limit",
                    "ALTER TABLE dataset DROP COLUMN access_level",
                    "DROP TABLE participation", "DROP TABLE token_terms",
                    "DROP TABLE alembic_version"):
            conn.execute(text(ddl))
    store.engine.dispose()

    store = Store(tmp_path)
    with store.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
        insp = inspect(conn)
        assert {"participation", "token_terms"} <= set(insp.get_table_names())
        assert {"kind", "upload_limit"} <= {c["name"] for c in insp.get_columns("organization")}
    with store.session() as s:
        org = s.get(Organization, "kobe-city")
        assert (org.name_ja, org.code, org.kind) == ("神戸市", "281000", None)
        assert s.scalar(select(Dataset.access_level).where(Dataset.id == "kobe-1")) == "public"


def test_a_database_of_a_newer_renkei_is_refused(tmp_path, capsys):
    store = Store(tmp_path)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_later'"))
    store.engine.dispose()
    with pytest.raises(migrate.SchemaError, match="9999_later.*newer renkei"):
        Store(tmp_path)
    assert main(["--data-dir", str(tmp_path), "jobs"]) == 2
    err = capsys.readouterr().err
    assert "renkei: the database is at schema revision 9999_later" in err
    assert "Traceback" not in err


def test_db_upgrade_command(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "d"), "db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"database schema: none (new, or made before migrations) -> {migrate.head()}"
    assert main(["--data-dir", str(tmp_path / "d"), "db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database schema: already at {migrate.head()}"


def test_start_up_at_head_checks_the_revision_once(tmp_path):
    """Tests and web workers make stores all the time: at head, Store() asks the revision and
    the search tokenizer version, and nothing else (no DDL, no lock)."""
    Store(tmp_path).engine.dispose()
    statements = []

    def record(conn, cursor, statement, *_args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        Store(tmp_path).engine.dispose()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert statements == ["SELECT version_num FROM alembic_version",
                          "SELECT value FROM search_meta WHERE key='tokenizer'"]


@pytest.mark.embedded_only(reason="superseded GeoPackages go at the switch")
def test_db_sweep_has_nothing_to_do_in_the_embedded_mode(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "db", "sweep"]) == 0
    assert capsys.readouterr().out.startswith("nothing to sweep")


@pytest.mark.pg_only(reason="PostgreSQL mode keeps nothing in a data dir")
def test_db_commands_make_no_data_dir_in_postgresql_mode(tmp_path, capsys):
    none = tmp_path / "none"
    assert main(["--data-dir", str(none), "db", "upgrade"]) == 0
    assert main(["--data-dir", str(none), "db", "sweep"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "superseded feature tables dropped: 0"
    assert not none.exists()
