"""The mail outbox, the operator's terms versions and (PostgreSQL mode) the files members
uploaded move into the catalogue database (2026-11, issue 14): a stateless web server in
PostgreSQL mode has no data dir for `outbox/*.eml`, `terms/*.yaml` or `uploads/`, and every
server must see the same of them.
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database stamped afresh (its alembic_version lost, as the baseline allows) may hold
    # them already: made only when missing, as the baseline does.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'mail_outbox' not in existing:
        _outbox()
    if 'terms_version' not in existing:
        _terms()
    if 'upload_original' not in existing:
        op.create_table('upload_original',
        sa.Column('resource_id', sa.String(length=250), nullable=False),
        sa.Column('filename', sa.Text(), nullable=False),
        sa.Column('size', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('stored_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('resource_id')
        )
    if 'upload_chunk' not in existing:
        op.create_table('upload_chunk',
        sa.Column('resource_id', sa.String(length=250), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('resource_id', 'seq')
        )


def _outbox() -> None:
    op.create_table('mail_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('message', sa.LargeBinary(), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('delivery', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_mail_outbox_status', 'mail_outbox', ['status'], unique=False)


def _terms() -> None:
    op.create_table('terms_version',
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('effective', sa.Date(), nullable=False),
    sa.Column('file', sa.String(length=200), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )


def downgrade() -> None:
    raise NotImplementedError("renkei migrations go forward only; restore a backup instead")
