"""send locks and feed state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:59:06.113963
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Builds before this revision created these two tables on demand; keep what exists.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "feed_state" not in existing:
        _create_feed_state()
    if "send_locks" not in existing:
        _create_send_locks()


def _create_feed_state() -> None:
    op.create_table('feed_state',
    sa.Column('source', sa.String(length=2000), nullable=False),
    sa.Column('etag', sa.String(length=500), nullable=True),
    sa.Column('modified', sa.String(length=100), nullable=True),
    sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source')
    )


def _create_send_locks() -> None:
    op.create_table('send_locks',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('send_locks')
    op.drop_table('feed_state')
