"""judged reports: each bounce report or provider event counts once

A genuine DSN replayed four times counted four soft bounces; a signed webhook event
replayed within its freshness window acted again. ``judged_reports`` keeps what was
already counted: one failure and one complaint per outbox row (kept), and each
provider event id (kept until ``expires_at``, past the provider's freshness window),
in the database so every process agrees.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-08 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judged_reports",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_judged_reports_expires_at", "judged_reports", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_judged_reports_expires_at", table_name="judged_reports")
    op.drop_table("judged_reports")
