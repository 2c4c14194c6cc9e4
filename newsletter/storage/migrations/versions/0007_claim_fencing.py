"""claim fencing: a token per sender on every claimed outbox row

A sender writes a result, renews a lease or gives a row back only while the row
still carries its token, so a sender that lost a row (paused past its lease, cut
off from the database) can neither send it after noticing nor overwrite what the
row's new holder recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 06:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claim_token")
