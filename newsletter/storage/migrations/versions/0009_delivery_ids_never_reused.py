"""delivery ids never reused: AUTOINCREMENT on SQLite's outbox

A bounce names its outbox row by id (the VERP token). Removing a subscriber deletes
their rows, and without AUTOINCREMENT SQLite gives a deleted highest id out again, so
a late bounce for the removed reader's row could name someone else's row. PostgreSQL
sequences never reuse ids; there this revision changes nothing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 08:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # AUTOINCREMENT exists only in CREATE TABLE: the table is rebuilt, rows keep their ids.
    # Nothing has a foreign key to deliveries (bounce events keep the id as a plain number).
    with op.batch_alter_table("deliveries", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("deliveries", recreate="always"):
        pass
