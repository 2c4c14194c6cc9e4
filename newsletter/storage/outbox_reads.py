"""What the outbox tells about its rows: one row, an edition's rows, the commonest failure replies,
the reports carried to next digests, when the next deferred row is due.

``OutboxReads`` is a part of ``OutboxStore`` (``store.outbox``); it writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.models import Delivery, DeliveryState
from newsletter.storage.part import StorePart
from newsletter.storage.schema import deliveries


class OutboxReads(StorePart):
    """The outbox's reads."""

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return _delivery(r) if r else None

    def find_delivery_by_message_id(self, message_id: str) -> Delivery | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(deliveries).where(deliveries.c.message_id == message_id)).first()
        return _delivery(r) if r else None

    def list_deliveries(self, edition_id: int) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries).where(deliveries.c.edition_id == edition_id).order_by(deliveries.c.id)
            ).all()
        return [_delivery(r) for r in rows]

    def failure_replies(self, edition_id: int, *, limit: int = 5) -> list[tuple[int | None, str, int]]:
        """The most common (code, reply, count) among failed, deferred and unknown rows."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.last_code, deliveries.c.last_reply, sa.func.count().label("n"))
                .where(
                    deliveries.c.edition_id == edition_id,
                    deliveries.c.state.in_(
                        [
                            DeliveryState.FAILED.value,
                            DeliveryState.DEFERRED.value,
                            DeliveryState.UNKNOWN.value,
                        ]
                    ),
                )
                .group_by(deliveries.c.last_code, deliveries.c.last_reply)
                .order_by(sa.text("n DESC"))
                .limit(limit)
            ).all()
        return [(r.last_code, r.last_reply, int(r.n)) for r in rows]

    def carried(self, edition_id: int) -> tuple[int, int]:
        """(readers, reports) the edition left for their next digest, over digest.max_reports."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(deliveries.c.carried), 0)).where(
                    deliveries.c.edition_id == edition_id, deliveries.c.carried > 0
                )
            ).one()
        return int(row[0]), int(row[1])

    def next_due(self, edition_id: int) -> datetime | None:
        """When the earliest deferred row of an edition is due, if any."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.edition_id == edition_id, deliveries.c.state == DeliveryState.DEFERRED.value
                )
            ).scalar()


def _delivery(r: Any) -> Delivery:
    return Delivery(
        r.id,
        r.edition_id,
        r.subscriber_id,
        r.variant_id,
        r.email,
        r.name,
        r.message_id,
        DeliveryState(r.state),
        r.attempts,
    )
