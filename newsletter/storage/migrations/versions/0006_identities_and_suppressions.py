"""identities never reused, a suppression list, the web app's mail queue

- subscribers: AUTOINCREMENT on SQLite (a deleted highest id is never given out
  again; PostgreSQL sequences already behave so) and ``legacy_links``, set for
  every reader that exists now: the id-only links already mailed to them keep
  working, and no later reader honours an id-only link.
- suppressions: the hash of every unsubscribed or bounced reader's canonical
  mailbox, so the list remembers who left after their row is deleted.
- web_mail_queue and mailbox_confirmations: confirmation and manage mails leave the
  request path; a lifetime cap on unconfirmed confirmations per mailbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from newsletter.storage.suppressions import mailbox_hash

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        # The table is rebuilt (AUTOINCREMENT exists only in CREATE TABLE); the rows keep their
        # ids, so deliveries and bounce events point at them again once it is back. Dropping
        # the old table must not trip their foreign keys meanwhile: outside a transaction
        # foreign_keys=OFF does that, inside one (after earlier revisions' updates) deferring does.
        bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
        bind.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
    with op.batch_alter_table("subscribers", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("legacy_links", sa.Boolean, nullable=False, server_default=sa.false()))
    if sqlite:
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
        assert not broken, f"rows point at missing subscribers after the rebuild: {broken[:5]}"
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
    subscribers = sa.table("subscribers", sa.column("legacy_links", sa.Boolean), sa.column("email"), sa.column("status"), sa.column("status_reason"), sa.column("updated_at", sa.DateTime(timezone=True)))
    bind.execute(subscribers.update().values(legacy_links=True))
    # The server default stays: dropping it would rebuild the SQLite table once more, and a
    # rebuild that does not pass sqlite_autoincrement (as above) loses AUTOINCREMENT. Any later
    # revision that recreates this table must pass table_kwargs={"sqlite_autoincrement": True}.

    suppressions = op.create_table(
        "suppressions",
        sa.Column("mailbox_hash", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    seen: set[str] = set()
    rows = bind.execute(
        sa.select(subscribers.c.email, subscribers.c.status, subscribers.c.status_reason, subscribers.c.updated_at).where(
            subscribers.c.status.in_(["unsubscribed", "bounced"])
        )
    ).all()
    entries = []
    for row in rows:
        key = mailbox_hash(row.email)
        if key not in seen:
            seen.add(key)
            entries.append({"mailbox_hash": key, "status": row.status, "reason": (row.status_reason or "")[:300], "created_at": row.updated_at})
    if entries:
        op.bulk_insert(suppressions, entries)

    op.create_table(
        "web_mail_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("topics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.String(500), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_web_mail_queue_email", "web_mail_queue", ["email"])
    op.create_index("ix_web_mail_queue_next_attempt_at", "web_mail_queue", ["next_attempt_at"])
    op.create_table(
        "mailbox_confirmations",
        sa.Column("mailbox_hash", sa.String(64), primary_key=True),
        sa.Column("unconfirmed", sa.Integer, nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mailbox_confirmations")
    op.drop_index("ix_web_mail_queue_next_attempt_at", table_name="web_mail_queue")
    op.drop_index("ix_web_mail_queue_email", table_name="web_mail_queue")
    op.drop_table("web_mail_queue")
    op.drop_table("suppressions")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("legacy_links")
