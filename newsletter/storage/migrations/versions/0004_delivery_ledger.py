"""delivery ledger: report ingest sequence, per-reader marks, carried reports

"New for you" moves from the publisher's dates to what the service recorded:
reports get a sequence in the order they were first stored, readers a mark that
advances only over digests they were sent. Existing data is carried over: reports
are numbered by (first_seen, published, id); a reader's mark becomes the newest
report published at or before their last digest (or the newest report, if they
never had one, so their first digest still takes the newest reports).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
    reports = sa.table("reports", sa.column("id"), sa.column("seq"), sa.column("first_seen"), sa.column("published"))
    ordered = bind.execute(sa.select(reports.c.id).order_by(reports.c.first_seen, reports.c.published, reports.c.id)).scalars().all()
    for seq, report_id in enumerate(ordered, start=1):
        bind.execute(reports.update().where(reports.c.id == report_id).values(seq=seq))
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("seq", existing_type=sa.Integer, nullable=False)
        batch.create_unique_constraint("uq_reports_seq", ["seq"])

    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("ledger_seq", sa.Integer, nullable=True))
    subscribers = sa.table("subscribers", sa.column("id"), sa.column("ledger_seq"), sa.column("last_digest_at"))
    newest = sa.select(sa.func.max(reports.c.seq)).scalar_subquery()
    had = (
        sa.select(sa.func.coalesce(sa.func.max(reports.c.seq), 0))
        .where(reports.c.published <= subscribers.c.last_digest_at)
        .scalar_subquery()
    )
    bind.execute(subscribers.update().where(subscribers.c.last_digest_at.is_not(None)).values(ledger_seq=had))
    bind.execute(subscribers.update().where(subscribers.c.last_digest_at.is_(None)).values(ledger_seq=newest))

    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ledger_seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("carried", sa.Integer, nullable=False, server_default="0"))
        batch.create_index("ix_deliveries_subscriber_state", ["subscriber_id", "state"])
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("carried", existing_type=sa.Integer, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_subscriber_state")
        batch.drop_column("carried")
        batch.drop_column("ledger_seq")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("ledger_seq")
    with op.batch_alter_table("reports") as batch:
        batch.drop_constraint("uq_reports_seq", type_="unique")
        batch.drop_column("seq")
