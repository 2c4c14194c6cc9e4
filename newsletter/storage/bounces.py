"""Bounce events per subscriber: counted by the soft-bounce policy, and per receiving
domain for policy refusals (kind ``blocked``); and the judgements already counted
(``judged_reports``), so a report or provider event counts once however often it arrives."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from newsletter.storage.part import StorePart
from newsletter.storage.schema import bounce_events, deliveries, judged_reports, subscribers


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

    def already_judged(self, keys: Sequence[str], *, now: datetime | None = None) -> bool:
        """Whether any of ``keys`` was counted before (and has not expired)."""
        if not keys:
            return False
        now = now or self.clock()
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(judged_reports.c.key)
                    .where(
                        judged_reports.c.key.in_(list(keys)),
                        sa.or_(judged_reports.c.expires_at.is_(None), judged_reports.c.expires_at >= now),
                    )
                    .limit(1)
                ).first()
                is not None
            )

    def mark_judged(
        self, keys: Sequence[str], *, expires_at: datetime | None = None, now: datetime | None = None
    ) -> bool:
        """Record ``keys`` as counted; False (nothing recorded) if any of them already was.

        The primary key makes this the one atomic step: of two processes judging the same
        report at once, one records it and the other gets False. Expired keys are pruned
        here, so the table holds only rows' keys and events still inside their window.
        """
        if not keys:
            return True
        now = now or self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    judged_reports.delete().where(
                        judged_reports.c.expires_at.is_not(None), judged_reports.c.expires_at < now
                    )
                )
                conn.execute(
                    judged_reports.insert(),
                    [{"key": k[:300], "at": now, "expires_at": expires_at} for k in dict.fromkeys(keys)],
                )
        except sa.exc.IntegrityError:
            return False
        return True

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
