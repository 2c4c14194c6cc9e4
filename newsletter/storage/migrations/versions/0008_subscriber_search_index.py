"""subscriber search index: (email, name, status)

`subscribers list --search` matches part of an address or a name, which no b-tree
can seek; this narrow covering index is what the count and the page scan instead of
the wide table (a third of the bytes), with or without --status.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 07:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain CREATE INDEX (no batch mode): rebuilding the SQLite table would drop its AUTOINCREMENT.
    op.create_index("ix_subscribers_search", "subscribers", ["email", "name", "status"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_search", table_name="subscribers")
