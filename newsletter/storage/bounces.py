"""Bounce events per subscriber: counted by the soft-bounce policy, and per receiving
domain for policy refusals (kind ``blocked``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from newsletter.storage.part import StorePart
from newsletter.storage.schema import bounce_events, deliveries, subscribers


class BounceStore(StorePart):
    """Bounce events per subscriber (kinds: hard, soft, blocked)."""

    def record_bounce(
        self,
        *,
        subscriber_id: int,
        delivery_id: int | None,
        kind: str,
        code: int | None,
        status: str,
        reply: str,
        source: str,
        now: datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                bounce_events.insert().values(
                    subscriber_id=subscriber_id,
                    delivery_id=delivery_id,
                    kind=kind,
                    code=code,
                    status=status,
                    reply=reply[:1000],
                    source=source,
                    at=now or self.clock(),
                )
            )

    def count_bounces(self, subscriber_id: int, *, kind: str, since: datetime) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(bounce_events)
                    .where(
                        bounce_events.c.subscriber_id == subscriber_id,
                        bounce_events.c.kind == kind,
                        bounce_events.c.at >= since,
                    )
                ).scalar_one()
            )

    def kinds_by_domain(
        self, *, since: datetime | None = None, edition_id: int | None = None
    ) -> list[tuple[str, str, int]]:
        """(receiving domain, kind, events) since a time and/or for one edition, most first."""
        query = sa.select(subscribers.c.email, bounce_events.c.kind).select_from(
            bounce_events.join(subscribers, subscribers.c.id == bounce_events.c.subscriber_id)
        )
        if since is not None:
            query = query.where(bounce_events.c.at >= since)
        if edition_id is not None:
            query = query.where(
                bounce_events.c.delivery_id.in_(
                    sa.select(deliveries.c.id).where(deliveries.c.edition_id == edition_id)
                )
            )
        counts: dict[tuple[str, str], int] = {}
        with self.engine.connect() as conn:
            for email, kind in conn.execute(query):
                key = (str(email).rsplit("@", 1)[-1].lower(), str(kind))
                counts[key] = counts.get(key, 0) + 1
        return sorted(((d, k, n) for (d, k), n in counts.items()), key=lambda t: (-t[2], t[0], t[1]))

    def blocked_by_domain(self, *, since: datetime, edition_id: int | None = None) -> dict[str, int]:
        """Policy refusals (kind blocked) per receiving domain."""
        return {
            d: n for d, k, n in self.kinds_by_domain(since=since, edition_id=edition_id) if k == "blocked"
        }
