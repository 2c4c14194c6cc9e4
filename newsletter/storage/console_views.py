"""Read-only views the operator console needs over other parts' tables: paged, searched, summed.

Nothing here writes: changes go through the owning parts (subscribers, outbox...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from newsletter.models import Subscriber
from newsletter.storage.part import StorePart
from newsletter.storage.schema import bounce_events, deliveries, editions, subscribers
from newsletter.storage.subscriber_search import as_subscriber as _subscriber


@dataclass(frozen=True)
class DeliveryLine:
    """One outbox row as the console lists it."""

    id: int
    edition_id: int
    edition_key: str
    email: str
    state: str
    attempts: int
    code: int | None
    reply: str
    updated_at: datetime | None


@dataclass(frozen=True)
class WeekGrowth:
    week: datetime  # Monday 00:00 UTC
    signups: int
    confirmations: int
    unsubscribes: int
    bounces: int


class ConsoleViews(StorePart):
    def search_subscribers(
        self, *, query: str = "", status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Subscriber], int]:
        """Subscribers whose address or name contains ``query`` (case-insensitive), one page, and
        the total."""
        where: list[Any] = []
        if query:
            pattern = "%" + query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                sa.or_(
                    sa.func.lower(subscribers.c.email).like(pattern, escape="\\"),
                    sa.func.lower(subscribers.c.name).like(pattern, escape="\\"),
                )
            )
        if status:
            where.append(subscribers.c.status == status)
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(subscribers).where(*where)
            ).scalar_one()
            rows = conn.execute(
                sa.select(subscribers).where(*where).order_by(subscribers.c.email).limit(limit).offset(offset)
            ).all()
        return [_subscriber(r) for r in rows], int(total)

    def status_totals(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def weekly_growth(self, *, weeks: int = 8) -> list[WeekGrowth]:
        """Signups, confirmations, unsubscribes and bounces per week (UTC, Monday first), oldest first."""
        now = self.clock()
        monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        starts = [monday - timedelta(weeks=i) for i in range(weeks - 1, -1, -1)]
        since = starts[0]
        with self.engine.connect() as conn:
            created = (
                conn.execute(sa.select(subscribers.c.created_at).where(subscribers.c.created_at >= since))
                .scalars()
                .all()
            )
            confirmed = (
                conn.execute(sa.select(subscribers.c.confirmed_at).where(subscribers.c.confirmed_at >= since))
                .scalars()
                .all()
            )
            left = (
                conn.execute(
                    sa.select(subscribers.c.updated_at).where(
                        subscribers.c.status == "unsubscribed", subscribers.c.updated_at >= since
                    )
                )
                .scalars()
                .all()
            )
            bounced = (
                conn.execute(
                    sa.select(bounce_events.c.at).where(
                        bounce_events.c.kind == "hard", bounce_events.c.at >= since
                    )
                )
                .scalars()
                .all()
            )

        def per_week(times: Sequence[datetime]) -> list[int]:
            counts = [0] * weeks
            for t in times:
                index = int((t - since).total_seconds() // (7 * 86400))
                if 0 <= index < weeks:
                    counts[index] += 1
            return counts

        columns = [per_week(created), per_week(confirmed), per_week(left), per_week(bounced)]
        return [WeekGrowth(start, *(column[i] for column in columns)) for i, start in enumerate(starts)]

    def edition_rows(
        self, edition_id: int, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[DeliveryLine], int]:
        where = [deliveries.c.edition_id == edition_id]
        if state:
            where.append(deliveries.c.state == state)
        return self._lines(where, limit=limit, offset=offset)

    def subscriber_rows(self, subscriber_id: int, *, limit: int = 20) -> list[DeliveryLine]:
        return self._lines(
            [deliveries.c.subscriber_id == subscriber_id], limit=limit, offset=0, newest_first=True
        )[0]

    def subscriber_bounces(self, subscriber_id: int, *, limit: int = 20) -> list[Any]:
        query = (
            sa.select(bounce_events)
            .where(bounce_events.c.subscriber_id == subscriber_id)
            .order_by(bounce_events.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def blocked_by_domain(self, edition_id: int, *, limit: int = 5) -> list[tuple[str, int]]:
        """Failed rows per recipient domain, most first: a provider blocking us shows up here."""
        query = sa.select(deliveries.c.email).where(
            deliveries.c.edition_id == edition_id, deliveries.c.state == "failed"
        )
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for email in conn.execute(query).scalars():
                domain = email.rsplit("@", 1)[-1].lower()
                counts[domain] = counts.get(domain, 0) + 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def _lines(
        self, where: list[Any], *, limit: int, offset: int, newest_first: bool = False
    ) -> tuple[list[DeliveryLine], int]:
        query = (
            sa.select(deliveries, editions.c.key.label("edition_key"))
            .join(editions, editions.c.id == deliveries.c.edition_id)
            .where(*where)
            .order_by(deliveries.c.id.desc() if newest_first else deliveries.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(deliveries).where(*where)
            ).scalar_one()
            rows = conn.execute(query).all()
        lines = [
            DeliveryLine(
                r.id,
                r.edition_id,
                r.edition_key,
                r.email,
                r.state,
                r.attempts,
                r.last_code,
                r.last_reply,
                r.updated_at,
            )
            for r in rows
        ]
        return lines, int(total)
