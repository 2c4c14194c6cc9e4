"""Subscribers: signup, status, preferences, and the streams planning reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.models import (
    Cadence,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
)
from newsletter.storage.schema import deliveries, reports, subscribers
from newsletter.storage.subscriber_import import ImportCounts as ImportCounts
from newsletter.storage.subscriber_import import ImportRow as ImportRow
from newsletter.storage.subscriber_import import SubscriberImports
from newsletter.storage.subscriber_search import SubscriberSearch, as_subscriber
from newsletter.storage.suppressions import SUPPRESSING, lift, suppress, suppressed_status


class SubscriberStore(SubscriberSearch, SubscriberImports):
    """Subscribers: signup, status, preferences, and the streams planning reads."""

    def add_subscriber(
        self,
        *,
        email: str,
        name: str = "",
        topics: Sequence[str] = (),
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
        cadence: Cadence = Cadence.DAILY,
        now: datetime | None = None,
    ) -> tuple[Subscriber, bool]:
        """Insert a subscriber unless the (normalised) email exists; returns (row, created).

        A mailbox on the suppression list (it unsubscribed or bounced, even if its row was
        removed since) is inserted with that status, never active or pending: an insert
        never reactivates anyone. Only ``set_status(..., ACTIVE)`` does (the reader's own
        confirmation, or `subscribers reactivate`). Every insert path (signup, add, CSV
        import, bulk inserts) must go through here or call ``suppressed_status`` itself.
        """
        now = now or self.clock()
        with self.engine.begin() as conn:
            existing = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).first()
            if existing is not None:
                return as_subscriber(existing), False
            held = suppressed_status(conn, email)
            reason = ""
            if held is not None and status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
                status, reason = (
                    held,
                    f"on the suppression list ({held.value});"
                    " only a confirmation or 'subscribers reactivate' brings it back",
                )
            try:
                new_id = conn.execute(
                    subscribers.insert().values(
                        email=email,
                        name=name,
                        status=status.value,
                        topics=list(topics),
                        cadence=cadence.value,
                        paused=False,
                        created_at=now,
                        updated_at=now,
                        confirmed_at=now if status is SubscriberStatus.ACTIVE else None,
                        status_reason=reason,
                        legacy_links=False,
                        # Owed what is stored from now on; what came before is not theirs to miss.
                        ledger_seq=_newest_report_seq(),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            except IntegrityError:
                # Another process inserted the same address between our check and insert.
                row = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).one()
                return as_subscriber(row), False
            if (
                status in SUPPRESSING and held is None
            ):  # added as unsubscribed or bounced (an export re-imported)
                suppress(conn, email, status, reason=reason or f"added as {status.value}", now=now)
            row = conn.execute(sa.select(subscribers).where(subscribers.c.id == new_id)).one()
            return as_subscriber(row), True

    def get_subscriber(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return as_subscriber(row) if row else None

    def find_subscriber(self, email: str) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).first()
        return as_subscriber(row) if row else None

    def list_subscribers(self, *, status: SubscriberStatus | None = None) -> Iterator[Subscriber]:
        """Every subscriber ordered by id, streamed in batches."""
        query = sa.select(subscribers).order_by(subscribers.c.id)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        yield from (as_subscriber(r) for r in self._stream(query, subscribers.c.id))

    def remove_subscriber(self, email: str, *, forget: bool = False) -> bool:
        """Delete a subscriber and their delivery history; False if unknown.

        The suppression list keeps an unsubscribed or bounced mailbox after this. With
        ``forget`` (the person asked to be erased) the mailbox is suppressed whatever its
        status, and only its hash is left: no row anywhere names the address or the name.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.status).where(subscribers.c.email == email)
            ).first()
            if row is None:
                return False
            if forget:
                held = (
                    SubscriberStatus.BOUNCED
                    if row.status == SubscriberStatus.BOUNCED.value
                    else SubscriberStatus.UNSUBSCRIBED
                )
                suppress(conn, email, held, reason="erased on request", now=self.clock())
            conn.execute(deliveries.delete().where(deliveries.c.subscriber_id == row.id))
            conn.execute(subscribers.delete().where(subscribers.c.id == row.id))
            if forget and self._has_search_table(conn):
                # The search index marks a deleted row deleted and keeps its trigrams in older
                # segments until they merge: merge them now, so no fragment of the erased
                # address or name is left (seconds at a million readers; erasures are rare).
                conn.exec_driver_sql("INSERT INTO subscribers_search(subscribers_search) VALUES ('optimize')")
            return True

    def set_status(
        self, subscriber_id: int, status: SubscriberStatus, *, reason: str = "", now: datetime | None = None
    ) -> bool:
        """Change a subscriber's status; True if the row changed (idempotent)."""
        now = now or self.clock()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "status_reason": reason[:300]}
        if status is SubscriberStatus.ACTIVE:
            values["confirmed_at"] = now
            # A reader who comes (back) is owed what is stored from now on, not what came while away.
            values["ledger_seq"] = _newest_report_seq()
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id, subscribers.c.status != status.value)
                .values(**values)
            )
            if result.rowcount == 0:
                return False
            # The suppression list follows, in the same transaction: it outlives the row.
            email = conn.execute(
                sa.select(subscribers.c.email).where(subscribers.c.id == subscriber_id)
            ).scalar_one()
            if status in SUPPRESSING:
                suppress(conn, email, status, reason=reason, now=now)
            elif status is SubscriberStatus.ACTIVE:
                lift(conn, email)
            return True

    def honours_legacy_links(self, subscriber_id: int) -> bool:
        """Whether id-only links made before migration 0006 may act for this subscriber
        (they existed then)."""
        with self.engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.select(subscribers.c.legacy_links).where(subscribers.c.id == subscriber_id)
                ).scalar()
            )

    def update_preferences(
        self, subscriber_id: int, *, topics: Sequence[str], cadence: Cadence, paused: bool
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(topics=list(topics), cadence=cadence.value, paused=paused, updated_at=self.clock())
            )

    def iter_recipients(
        self, *, cadences: Sequence[Cadence] | None = None, batch_size: int = 2000
    ) -> Iterator[Subscriber]:
        """Active, unpaused subscribers (optionally of some cadences), streamed by id."""
        query = sa.select(subscribers).where(*receiving(cadences))
        yield from (as_subscriber(r) for r in self._stream(query, subscribers.c.id, batch_size=batch_size))

    def count_waiting(self, *, cadences: Sequence[Cadence] | None, outside_edition: int) -> int:
        """Active readers left out of planning because another edition still owes them (see above)."""
        query = (
            sa.select(sa.func.count())
            .select_from(subscribers)
            .where(*receiving(cadences), waiting_elsewhere(outside_edition))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def inactive_since(self, since: datetime) -> set[int]:
        """Subscribers that stopped being active (unsubscribed, bounced, paused) at or after ``since``."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(subscribers.c.id).where(
                        subscribers.c.updated_at >= since,
                        sa.or_(
                            subscribers.c.status != SubscriberStatus.ACTIVE.value,
                            subscribers.c.paused == sa.true(),
                        ),
                    )
                ).scalars()
            )

    def claim_mail_slot(
        self, subscriber_id: int, *, now: datetime, interval: timedelta
    ) -> tuple[bool, datetime | None]:
        """Atomically take the right to mail a subscriber now: (claimed, previous confirmation_sent_at).

        One UPDATE with the time condition in its WHERE, so two concurrent signups
        for one address cannot both send (check-then-mark in two steps could).
        """
        with self.engine.begin() as conn:
            previous = conn.execute(
                sa.select(subscribers.c.confirmation_sent_at).where(subscribers.c.id == subscriber_id)
            ).scalar()
            result = conn.execute(
                subscribers.update()
                .where(
                    subscribers.c.id == subscriber_id,
                    sa.or_(
                        subscribers.c.confirmation_sent_at.is_(None),
                        subscribers.c.confirmation_sent_at <= now - interval,
                    ),
                )
                .values(confirmation_sent_at=now)
            )
            return result.rowcount == 1, previous

    def release_mail_slot(
        self, subscriber_id: int, *, claimed_at: datetime, previous: datetime | None
    ) -> None:
        """Undo a claim whose mail was not sent, so the reader may ask again at once."""
        with self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id, subscribers.c.confirmation_sent_at == claimed_at)
                .values(confirmation_sent_at=previous)
            )


UNFINISHED_STATES = (DeliveryState.PENDING.value, DeliveryState.SENDING.value, DeliveryState.DEFERRED.value)


def receiving(cadences: Sequence[Cadence] | None) -> list[sa.ColumnElement[bool]]:
    """Who an edition of these cadences (None: every cadence) is for: active, unpaused readers."""
    where = [subscribers.c.status == SubscriberStatus.ACTIVE.value, subscribers.c.paused == sa.false()]
    if cadences is not None:
        where.append(subscribers.c.cadence.in_([c.value for c in cadences]))
    return where


def waiting_elsewhere(edition_id: int) -> sa.Exists:
    """The reader has a row that another edition has not finished."""
    return (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.subscriber_id == subscribers.c.id,
            deliveries.c.edition_id != edition_id,
            deliveries.c.state.in_(UNFINISHED_STATES),
        )
        .exists()
    )


def _newest_report_seq() -> sa.ScalarSelect[Any]:
    """The newest report's seq, or NULL before the first report is stored: a list imported
    before the feed was ever read is owed none of the feed's backlog (its first digest takes
    the newest reports, as for a reader never planned)."""
    return sa.select(sa.func.max(reports.c.seq)).scalar_subquery()
