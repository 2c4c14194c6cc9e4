"""Bounce events per subscriber, counted by the soft-bounce policy."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from newsletter.storage.part import StorePart
from newsletter.storage.schema import bounce_events


class BounceStore(StorePart):
    """Bounce events per subscriber, counted by the soft-bounce policy."""

    def record_bounce(
        self, *, subscriber_id: int, delivery_id: int | None, kind: str, code: int | None, status: str, reply: str, source: str, now: datetime | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                bounce_events.insert().values(
                    subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, code=code, status=status, reply=reply[:1000], source=source, at=now or self.clock()
                )
            )

    def count_bounces(self, subscriber_id: int, *, kind: str, since: datetime) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(bounce_events)
                    .where(bounce_events.c.subscriber_id == subscriber_id, bounce_events.c.kind == kind, bounce_events.c.at >= since)
                ).scalar_one()
            )
