"""Baseline: the catalogue, accounts, terms, usage, applications and search tables as they were
when renkei adopted Alembic (2026-11).

Also brings up a database made before Alembic (tables there, no alembic_version): missing tables
are created, columns added since they were first made are added (what store.db's LATER_COLUMNS
did at every start), nothing existing is dropped or recreated. Hence every step checks first.

Search: SQLite gets the FTS5 bigram index over the token columns (external content, kept by
triggers); PostgreSQL a `grams text[]` column with a GIN index (store.search). The token columns
are filled by store.search at start-up when the tokenizer version in search_meta differs.
"""
from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

# 64-bit in both (SQLite's INTEGER already is; only an INTEGER primary key is a rowid alias).
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Columns added to tables after their first release: (table, column, SQL type, fill for old rows).
LATER_COLUMNS = [
    ("harvest_job", "heartbeat_at", "TIMESTAMP", None),
    ("harvest_error", "traceback", "TEXT", None),
    ("organization", "created_at", "TIMESTAMP", "CURRENT_TIMESTAMP"),
    ("dataset", "access_level", "VARCHAR(20) NOT NULL DEFAULT 'public'", None),
    ("organization", "kind", "VARCHAR(20)", None),
    ("organization", "upload_limit", "INTEGER", None),
    # The bigram search (replacing the trigram one) keeps its tokens beside the text.
    ("search_doc", "title_t", "TEXT NOT NULL DEFAULT ''", None),
    ("search_doc", "tags_t", "TEXT NOT NULL DEFAULT ''", None),
    ("search_doc", "body_t", "TEXT NOT NULL DEFAULT ''", None),
    ("search_doc", "tail_t", "TEXT NOT NULL DEFAULT ''", None),
]

_FTS_COLS = "title_t, tags_t, body_t, tail_t"
_SQLITE_SEARCH = [
    # The trigram index of the first search version: replaced by the bigram one below.
    "DROP TRIGGER IF EXISTS search_doc_ai", "DROP TRIGGER IF EXISTS search_doc_ad",
    "DROP TRIGGER IF EXISTS search_doc_au", "DROP TABLE IF EXISTS search_fts",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS search_bigram USING fts5({_FTS_COLS}, "
    "content='search_doc', content_rowid='doc_id', tokenize='unicode61 remove_diacritics 0')",
    # External content: the triggers are the only writers, so the index cannot drift.
    f"CREATE TRIGGER IF NOT EXISTS search_doc_bi AFTER INSERT ON search_doc BEGIN "
    f"INSERT INTO search_bigram(rowid, {_FTS_COLS}) VALUES (new.doc_id, new.title_t, "
    "new.tags_t, new.body_t, new.tail_t); END",
    f"CREATE TRIGGER IF NOT EXISTS search_doc_bd AFTER DELETE ON search_doc BEGIN "
    f"INSERT INTO search_bigram(search_bigram, rowid, {_FTS_COLS}) VALUES ('delete', "
    "old.doc_id, old.title_t, old.tags_t, old.body_t, old.tail_t); END",
]
_POSTGRESQL_SEARCH = [
    "ALTER TABLE search_doc ADD COLUMN IF NOT EXISTS grams text[] NOT NULL DEFAULT '{}'",
    "CREATE INDEX IF NOT EXISTS ix_search_doc_grams ON search_doc USING gin (grams)",
]


_existing: set[str] = set()  # tables there before this revision ran (none in a new database)


def _table(name, *columns):
    if name not in _existing:
        op.create_table(name, *columns)


def _index(table, name, columns, unique=False):
    op.create_index(name, table, columns, unique=unique, if_not_exists=True)


def _later_columns():
    inspector = sa.inspect(op.get_bind())
    for table, column, sql_type, fill in LATER_COLUMNS:
        if table not in _existing:  # made just now, with every column
            continue
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            if fill:
                op.execute(f"UPDATE {table} SET {column} = {fill} WHERE {column} IS NULL")
            if table == "search_doc":  # tokens to compute: store.search sees no tokenizer version
                op.execute("DELETE FROM search_meta WHERE key = 'tokenizer'")


def upgrade() -> None:
    _existing.clear()
    _existing.update(sa.inspect(op.get_bind()).get_table_names())
    _table('app_user',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=True),
    sa.Column('password_hash', sa.Text(), nullable=True),
    sa.Column('oidc_issuer', sa.Text(), nullable=True),
    sa.Column('oidc_subject', sa.Text(), nullable=True),
    sa.Column('is_sysadmin', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email'),
    sa.UniqueConstraint('oidc_issuer', 'oidc_subject')
    )
    _table('application',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('organization_id', sa.String(length=100), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('terms_version', sa.String(length=40), nullable=True),
    sa.Column('link_hash', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('handled_by', sa.String(length=320), nullable=True),
    sa.Column('handled_at', sa.DateTime(), nullable=True),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('link_hash')
    )
    _index('application', 'ix_application_kind', ['kind'])
    _index('application', 'ix_application_organization_id', ['organization_id'])
    _index('application', 'ix_application_status', ['status'])
    _table('audit_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('user_email', sa.String(length=320), nullable=True),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('via', sa.String(length=10), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('object_type', sa.String(length=20), nullable=False),
    sa.Column('object_id', sa.Text(), nullable=True),
    sa.Column('organization_id', sa.String(length=100), nullable=True),
    sa.Column('access_before', sa.String(length=20), nullable=True),
    sa.Column('access_after', sa.String(length=20), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('audit_event', 'ix_audit_event_at', ['at'])
    _index('audit_event', 'ix_audit_event_organization_id', ['organization_id'])
    _table('dataset',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('source_name', sa.String(length=100), nullable=False),
    sa.Column('remote_id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('theme', sa.String(length=50), nullable=True),
    sa.Column('license_id', sa.String(length=100), nullable=True),
    sa.Column('license_title', sa.Text(), nullable=True),
    sa.Column('license_url', sa.Text(), nullable=True),
    sa.Column('organization_id', sa.String(length=100), nullable=True),
    sa.Column('issued', sa.String(length=40), nullable=True),
    sa.Column('modified', sa.String(length=40), nullable=True),
    sa.Column('landing_page', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('access_level', sa.String(length=20), nullable=False),
    sa.Column('raw', sa.JSON(), nullable=False),
    sa.Column('metadata_hash', sa.String(length=64), nullable=True),
    sa.Column('bbox', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _index('dataset', 'ix_dataset_organization_id', ['organization_id'])
    _index('dataset', 'ix_dataset_source_name', ['source_name'])
    _table('harvest_job',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source_name', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('added', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('withdrawn', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('harvest_job', 'ix_harvest_job_source_name', ['source_name'])
    _table('meta',
    sa.Column('key', sa.String(length=50), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    _table('organization',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('name_ja', sa.Text(), nullable=False),
    sa.Column('name_en', sa.Text(), nullable=True),
    sa.Column('code', sa.String(length=6), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=True),
    sa.Column('upload_limit', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _table('participation',
    sa.Column('organization_id', sa.String(length=100), nullable=False),
    sa.Column('population', sa.Integer(), nullable=True),
    sa.Column('terms_version', sa.String(length=40), nullable=True),
    sa.Column('joined_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('organization_id')
    )
    _table('quota_notice',
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('token_id', 'month', 'level')
    )
    _table('search_change',
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.Column('doc_id', sa.Integer(), nullable=False)
    )
    _index('search_change', 'ix_search_change_gen', ['gen'])
    _table('search_doc',
    sa.Column('doc_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('title_n', sa.Text(), nullable=False),
    sa.Column('tags_n', sa.Text(), nullable=False),
    sa.Column('body_n', sa.Text(), nullable=False),
    sa.Column('organization', sa.String(length=100), nullable=True),
    sa.Column('modified', sa.String(length=40), nullable=True),
    sa.Column('title_t', sa.Text(), nullable=False),
    sa.Column('tags_t', sa.Text(), nullable=False),
    sa.Column('body_t', sa.Text(), nullable=False),
    sa.Column('tail_t', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('doc_id'),
    sa.UniqueConstraint('dataset_id')
    )
    _index('search_doc', 'ix_search_doc_modified', ['modified'])
    _table('search_facet',
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('field', sa.String(length=20), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.UniqueConstraint('dataset_id', 'field', 'value')
    )
    _index('search_facet', 'ix_search_facet_dataset_id', ['dataset_id'])
    _index('search_facet', 'ix_search_facet_field_value', ['field', 'value'])
    _table('search_meta',
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    _table('source',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('organization_id', sa.String(length=100), nullable=True),
    sa.Column('last_success', sa.DateTime(), nullable=True),
    sa.Column('last_failure', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    _table('token_terms',
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('terms_version', sa.String(length=40), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('token_id')
    )
    _table('usage_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('consumer_org', sa.String(length=100), nullable=True),
    sa.Column('dataset_id', sa.String(length=200), nullable=True),
    sa.Column('owner_org', sa.String(length=100), nullable=True),
    sa.Column('interface', sa.String(length=20), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('bytes', _BIGINT, nullable=False),
    sa.Column('features', sa.Integer(), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _index('usage_event', 'ix_usage_event_at', ['at'])
    _index('usage_event', 'ix_usage_event_token_id', ['token_id'])
    _table('usage_monthly',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('owner_org', sa.String(length=100), nullable=False),
    sa.Column('consumer_org', sa.String(length=100), nullable=False),
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('interface', sa.String(length=20), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.Column('bytes', _BIGINT, nullable=False),
    sa.Column('features', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('month', 'owner_org', 'consumer_org', 'dataset_id', 'interface')
    )
    _table('api_token',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('display_prefix', sa.String(length=20), nullable=False),
    sa.Column('scope', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    _index('api_token', 'ix_api_token_user_id', ['user_id'])
    _table('collection',
    sa.Column('id', sa.String(length=250), nullable=False),
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('resource_id', sa.String(length=250), nullable=False),
    sa.Column('layer_name', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('keywords', sa.JSON(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('layer', sa.String(length=100), nullable=False),
    sa.Column('feature_count', sa.Integer(), nullable=False),
    sa.Column('bbox', sa.JSON(), nullable=True),
    sa.Column('fields', sa.JSON(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('published_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    _index('collection', 'ix_collection_dataset_id', ['dataset_id'])
    _table('harvest_error',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('dataset', sa.Text(), nullable=True),
    sa.Column('resource', sa.Text(), nullable=True),
    sa.Column('row', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['harvest_job.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    _index('harvest_error', 'ix_harvest_error_job_id', ['job_id'])
    _table('membership',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('organization_id', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], ),
    sa.PrimaryKeyConstraint('user_id', 'organization_id')
    )
    _table('resource',
    sa.Column('id', sa.String(length=250), nullable=False),
    sa.Column('dataset_id', sa.String(length=200), nullable=False),
    sa.Column('remote_id', sa.String(length=200), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('format', sa.String(length=40), nullable=True),
    sa.Column('detected_format', sa.String(length=40), nullable=True),
    sa.Column('size', _BIGINT, nullable=True),
    sa.Column('encoding', sa.String(length=20), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('etag', sa.Text(), nullable=True),
    sa.Column('last_modified', sa.Text(), nullable=True),
    sa.Column('remote_modified', sa.String(length=40), nullable=True),
    sa.Column('fetched_at', sa.DateTime(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('preview', sa.JSON(), nullable=True),
    sa.Column('quality', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    _index('resource', 'ix_resource_dataset_id', ['dataset_id'])
    _later_columns()
    for ddl in (_SQLITE_SEARCH if op.get_bind().dialect.name == "sqlite" else _POSTGRESQL_SEARCH):
        op.execute(ddl)


def downgrade() -> None:
    raise NotImplementedError("renkei migrations go forward only; restore a backup instead")
