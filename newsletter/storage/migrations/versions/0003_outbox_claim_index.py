"""outbox claim index: (edition_id, state, id)

Claims read due rows of one state in id order; with id in the index, PostgreSQL
walks it in order and stops at the batch size instead of sorting the edition.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_edition_state")
        batch.create_index("ix_deliveries_edition_state_id", ["edition_id", "state", "id"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_edition_state_id")
        batch.create_index("ix_deliveries_edition_state", ["edition_id", "state"])
