"""subscriber changes index: (updated_at)

A send asks every half second who unsubscribed, bounced or paused since it began
(``SubscriberStore.inactive_since``), so a reader who leaves mid-send is not mailed.
Without an index on ``updated_at`` each question read every subscriber: 20 ms at
100,000 readers, twice a second, for the whole send. With it, each question reads
only the readers changed since the send began.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 12:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain CREATE INDEX (no batch mode): rebuilding the SQLite table would drop its
    # AUTOINCREMENT and 0010's search triggers.
    op.create_index("ix_subscribers_updated_at", "subscribers", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_updated_at", table_name="subscribers")
