"""Small readers the delivery tests share (the invariants themselves are in tests/invariants.py)."""

from __future__ import annotations

import sqlalchemy as sa

from newsletter.storage.schema import bounce_events, subscribers
from newsletter.storage.store import Store


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def subscriber_status(store: Store, email: str) -> str:
    with store.engine.connect() as conn:
        return str(
            conn.execute(
                sa.select(subscribers.c.status).where(subscribers.c.email == email.lower())
            ).scalar_one()
        )


def bounce_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(bounce_events)).scalar_one())
