"""Queries the web app needs that the core Store does not offer (yet).

They use the core's tables and engine; if the core grows equivalents, these go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from newsletter.models import EditionStatus
from newsletter.storage.store import Store, editions, subscribers, variants

# Editions whose digests went out (fully or partly) may be shown in the archive.
PUBLISHED = (EditionStatus.SENT.value, EditionStatus.SENDING.value)


@dataclass(frozen=True)
class ArchiveEntry:
    variant_id: int
    edition_id: int
    subject: str
    report_count: int
    sent_at: datetime | None


def claim_mail_slot(store: Store, subscriber_id: int, *, now: datetime, interval: timedelta) -> tuple[bool, datetime | None]:
    """Atomically take the right to mail a subscriber now: (claimed, previous confirmation_sent_at).

    One UPDATE with the time condition in its WHERE, so two concurrent signups
    for one address cannot both send (check-then-mark in two steps could).
    """
    with store.engine.begin() as conn:
        previous = conn.execute(
            sa.select(subscribers.c.confirmation_sent_at).where(subscribers.c.id == subscriber_id)
        ).scalar()
        result = conn.execute(
            subscribers.update()
            .where(
                subscribers.c.id == subscriber_id,
                sa.or_(subscribers.c.confirmation_sent_at.is_(None), subscribers.c.confirmation_sent_at <= now - interval),
            )
            .values(confirmation_sent_at=now)
        )
        return result.rowcount == 1, previous


def release_mail_slot(store: Store, subscriber_id: int, *, claimed_at: datetime, previous: datetime | None) -> None:
    """Undo a claim whose mail was not sent, so the reader may ask again at once."""
    with store.engine.begin() as conn:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == subscriber_id, subscribers.c.confirmation_sent_at == claimed_at)
            .values(confirmation_sent_at=previous)
        )


def archive_entries(store: Store, *, limit: int = 200) -> list[ArchiveEntry]:
    """Published variants, newest edition first, without loading their HTML."""
    query = (
        sa.select(variants.c.id, variants.c.edition_id, variants.c.subject, variants.c.report_ids, editions.c.started_at, editions.c.as_of)
        .join(editions, editions.c.id == variants.c.edition_id)
        .where(editions.c.status.in_(PUBLISHED), variants.c.subject != "")
        .order_by(editions.c.id.desc(), variants.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [ArchiveEntry(r.id, r.edition_id, r.subject, len(r.report_ids or ()), r.started_at or r.as_of) for r in rows]


def published_variant_html(store: Store, variant_id: int) -> str | None:
    """The stored HTML of a variant whose edition was published, else None."""
    query = (
        sa.select(variants.c.html)
        .join(editions, editions.c.id == variants.c.edition_id)
        .where(variants.c.id == variant_id, editions.c.status.in_(PUBLISHED))
    )
    with store.engine.connect() as conn:
        html = conn.execute(query).scalar()
    return html or None
