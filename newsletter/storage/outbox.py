"""The outbox: one row per (edition, subscriber), its state, lease and Message-ID."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from newsletter.models import (
    Delivery,
    DeliveryOutcome,
    DeliveryState,
    EditionStatus,
    SubscriberStatus,
)
from newsletter.storage.outbox_reads import OutboxReads
from newsletter.storage.schema import deliveries, editions, subscribers


class OutboxStore(OutboxReads):
    """The outbox: one row per (edition, subscriber), its state, lease and Message-ID; the reads
    (rows, failure replies, carried reports, next due time) are ``OutboxReads``."""

    def add_deliveries(self, rows: Sequence[dict[str, Any]], *, now: datetime | None = None) -> None:
        """Insert outbox rows (edition_id, subscriber_id, variant_id, email, name, message_id,
        ledger_seq, carried) as pending."""
        if not rows:
            return
        now = now or self.clock()
        payload = [
            {**r, "state": DeliveryState.PENDING.value, "attempts": 0, "updated_at": now, "last_reply": ""}
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(deliveries.insert(), payload)

    def claim_deliveries(
        self,
        edition_id: int,
        *,
        limit: int,
        worker: str = "",
        lease_seconds: int = 300,
        token: str | None = None,
        now: datetime | None = None,
    ) -> list[Delivery]:
        """Take up to ``limit`` due rows and mark them sending under a lease held by ``worker``.

        Due: pending, deferred whose next attempt has come, or sending whose lease
        ran out (its sender died on another machine). On PostgreSQL the rows are
        locked with FOR UPDATE SKIP LOCKED, so several senders never take the same
        row. Rows whose subscriber is no longer active (or paused) are marked
        suppressed instead, so an unsubscribe or bounce during a send is honoured.
        ``token`` is the sender's fencing token: its later writes on these rows hold only
        while a row still carries it (see ``record_outcomes``, ``renew_lease``, ``give_back``).
        """
        now = now or self.clock()
        # Three narrow queries instead of one OR: each walks the (edition_id, state, id)
        # index in order and stops at ``limit``, so a claim costs the same at row 10 and
        # at row 1,000,000 (the OR made both SQLite and PostgreSQL scan the edition).
        due_kinds = (
            deliveries.c.state == DeliveryState.PENDING.value,
            sa.and_(deliveries.c.state == DeliveryState.DEFERRED.value, deliveries.c.next_attempt_at <= now),
            sa.and_(deliveries.c.state == DeliveryState.SENDING.value, deliveries.c.lease_until < now),
        )
        columns = (
            deliveries.c.id,
            deliveries.c.edition_id,
            deliveries.c.subscriber_id,
            deliveries.c.variant_id,
            deliveries.c.email,
            deliveries.c.name,
            deliveries.c.message_id,
            deliveries.c.attempts,
            subscribers.c.status.label("subscriber_status"),
            subscribers.c.paused.label("subscriber_paused"),
        )
        lease_until = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            rows: list[Any] = []
            for condition in due_kinds:
                if len(rows) >= limit:
                    break
                query = (
                    sa.select(*columns)
                    .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                    .where(deliveries.c.edition_id == edition_id, condition)
                    .order_by(deliveries.c.state, deliveries.c.id)
                    .limit(limit - len(rows))
                )
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True, of=deliveries)
                rows.extend(conn.execute(query).all())
            # Rows unpacked by position: attribute access on a result row costs more than
            # the rest of the claim at a batch of 500.
            active = SubscriberStatus.ACTIVE.value
            take: list[Delivery] = []
            gone: list[int] = []
            for (
                row_id,
                edition,
                subscriber_id,
                variant_id,
                email,
                name,
                message_id,
                attempts,
                status,
                paused,
            ) in rows:
                if status == active and not paused:
                    take.append(
                        Delivery(
                            row_id,
                            edition,
                            subscriber_id,
                            variant_id,
                            email,
                            name,
                            message_id,
                            DeliveryState.SENDING,
                            attempts + 1,
                        )
                    )
                else:
                    gone.append(row_id)
            if take:
                conn.execute(
                    deliveries.update()
                    .where(self.ids_in(deliveries.c.id, [d.id for d in take]))
                    .values(
                        state=DeliveryState.SENDING.value,
                        attempts=deliveries.c.attempts + 1,
                        updated_at=now,
                        claimed_by=worker,
                        lease_until=lease_until,
                        claim_token=token,
                    )
                )
            if gone:
                conn.execute(
                    deliveries.update()
                    .where(self.ids_in(deliveries.c.id, gone))
                    .values(
                        state=DeliveryState.SUPPRESSED.value,
                        updated_at=now,
                        last_reply="subscriber no longer active",
                    )
                )
        return take

    def renew_lease(
        self,
        edition_id: int,
        *,
        worker: str,
        lease_seconds: int,
        token: str | None = None,
        now: datetime | None = None,
    ) -> set[int]:
        """Extend the lease of every row this sender still holds as sending; the ids it holds.

        With ``token``, held means still carrying that fencing token: a row another sender
        took over after the lease ran out is not renewed, and is missing from the answer.
        """
        now = now or self.clock()
        held = deliveries.c.claim_token == token if token is not None else deliveries.c.claimed_by == worker
        with self.engine.begin() as conn:
            return set(
                conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.edition_id == edition_id,
                        deliveries.c.state == DeliveryState.SENDING.value,
                        held,
                    )
                    .values(lease_until=now + timedelta(seconds=lease_seconds))
                    .returning(deliveries.c.id)
                ).scalars()
            )

    def give_back(
        self, ids: Sequence[int], *, reply: str, token: str | None = None, holder: str | None = None
    ) -> int:
        """Rows back to pending, fenced: only those still sending under ``token`` (a sender's own
        rows it will not send) or ``holder`` (a dead sender's rows, given back by a recovery)."""
        if not ids:
            return 0
        with self.engine.begin() as conn:
            given: int = conn.execute(
                deliveries.update()
                .where(self.ids_in(deliveries.c.id, ids), *_held_by(token, holder))
                .values(
                    state=DeliveryState.PENDING.value,
                    updated_at=self.clock(),
                    last_reply=reply[:1000],
                    claim_token=None,
                )
            ).rowcount
        return given

    def sending_rows(self, edition_id: int) -> list[tuple[int, int, str]]:
        """(row id, subscriber id, claimed_by) of every row left sending."""
        with self.engine.connect() as conn:
            return [
                (r.id, r.subscriber_id, r.claimed_by or "")
                for r in conn.execute(
                    sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.claimed_by).where(
                        deliveries.c.edition_id == edition_id,
                        deliveries.c.state == DeliveryState.SENDING.value,
                    )
                )
            ]

    def sending_holders(self) -> set[tuple[int, str]]:
        """(edition id, claimed_by) of every sender holding rows of an edition in progress, live or not."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.edition_id, deliveries.c.claimed_by)
                .distinct()
                .join(editions, editions.c.id == deliveries.c.edition_id)
                .where(
                    editions.c.status == EditionStatus.SENDING.value,
                    deliveries.c.state == DeliveryState.SENDING.value,
                )
            ).all()
        return {(int(edition_id), claimed_by or "") for edition_id, claimed_by in rows}

    def claimable_editions(self, *, now: datetime | None = None) -> list[int]:
        """Editions in progress that have rows a worker could take now."""
        now = now or self.clock()
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(deliveries.c.edition_id)
                    .distinct()
                    .join(editions, editions.c.id == deliveries.c.edition_id)
                    .where(
                        editions.c.status == EditionStatus.SENDING.value,
                        sa.or_(
                            deliveries.c.state == DeliveryState.PENDING.value,
                            sa.and_(
                                deliveries.c.state == DeliveryState.DEFERRED.value,
                                deliveries.c.next_attempt_at <= now,
                            ),
                            sa.and_(
                                deliveries.c.state == DeliveryState.SENDING.value,
                                deliveries.c.lease_until < now,
                            ),
                        ),
                    )
                ).scalars()
            )

    def record_outcomes(
        self,
        outcomes: Sequence[DeliveryOutcome],
        *,
        as_of: datetime,
        token: str | None = None,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> set[int]:
        """Commit a batch of send results in one transaction.

        A sent row also moves its reader's ledger mark to the row's ``ledger_seq`` (never
        back) and their "last digest" time to ``as_of``, in the same transaction, so no
        planning ever sees the row sent and the mark not yet moved. A row whose outcome is
        unknown moves the mark too: the server may have delivered it, and it is resent only
        as itself (same Message-ID) when an operator asks, never as part of a new digest.

        Fenced: with ``token`` (a sender) or ``holder`` (a recovery of a dead sender's rows),
        a result is written only on a row that is still sending and still carries that token
        or holder, so a sender that lost a row never overwrites what its new holder recorded.
        Returns the ids written; results for rows taken over are dropped.
        """
        if not outcomes:
            return set()
        now = now or self.clock()
        fence = _held_by(token, holder) if token is not None or holder is not None else []
        sent = [o for o in outcomes if o.state is DeliveryState.SENT]
        others = [o for o in outcomes if o.state is not DeliveryState.SENT]
        written: set[int] = set()
        with self.engine.begin() as conn:
            if sent:
                # One statement for the batch's sent rows: the common case stays cheap at scale.
                written.update(
                    conn.execute(
                        deliveries.update()
                        .where(self.ids_in(deliveries.c.id, [o.delivery_id for o in sent]), *fence)
                        .values(
                            state=DeliveryState.SENT.value,
                            updated_at=now,
                            sent_at=now,
                            last_code=250,
                            last_reply="",
                            next_attempt_at=None,
                            claim_token=None,
                        )
                        .returning(deliveries.c.id)
                    ).scalars()
                )
            for outcome in others:
                values: dict[str, Any] = {
                    "state": outcome.state.value,
                    "updated_at": now,
                    "last_code": outcome.code,
                    "last_reply": outcome.reply[:1000],
                    "next_attempt_at": outcome.next_attempt_at,
                    "claim_token": None,
                }
                if conn.execute(
                    deliveries.update().where(deliveries.c.id == outcome.delivery_id, *fence).values(**values)
                ).rowcount:
                    written.add(outcome.delivery_id)
            delivered = [
                o.delivery_id
                for o in outcomes
                if o.state in (DeliveryState.SENT, DeliveryState.UNKNOWN) and o.delivery_id in written
            ]
            if delivered:
                conn.execute(_readers_given(self.ids_in(deliveries.c.id, delivered), as_of))
        return written

    def set_rows_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str = "") -> None:
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(self.ids_in(deliveries.c.id, ids))
                .values(state=state.value, updated_at=self.clock(), last_reply=reply)
            )

    def requeue_unknown(self, edition_id: int) -> int:
        """Put 'unknown' rows back to pending so a resume sends them again (same Message-ID)."""
        with self.engine.begin() as conn:
            return conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.edition_id == edition_id, deliveries.c.state == DeliveryState.UNKNOWN.value
                )
                .values(state=DeliveryState.PENDING.value, updated_at=self.clock())
            ).rowcount


def _held_by(token: str | None, holder: str | None) -> list[Any]:
    """The fence of a write on a claimed row: still sending, under this token (else this holder)."""
    held = (
        deliveries.c.claim_token == token
        if token is not None
        else sa.func.coalesce(deliveries.c.claimed_by, "") == (holder or "")
    )
    return [deliveries.c.state == DeliveryState.SENDING.value, held]


def _readers_given(rows: sa.ColumnElement[bool], as_of: datetime) -> sa.Update:
    """What a sent (or unknown) row gives its reader, in one UPDATE ... FROM over the rows:
    the reader's ledger mark moves up to the row's ``ledger_seq`` (never down, and not for a
    row without one), and a sent row moves their "last digest" time up to ``as_of``.

    ``rows`` selects the rows, already in their final state; each reader has at most one of
    them (one row per reader in an edition, and a batch is of one edition)."""
    moves_mark = sa.and_(
        deliveries.c.ledger_seq.is_not(None),
        sa.or_(subscribers.c.ledger_seq.is_(None), subscribers.c.ledger_seq < deliveries.c.ledger_seq),
    )
    newer_digest = sa.and_(
        deliveries.c.state == DeliveryState.SENT.value,
        sa.or_(subscribers.c.last_digest_at.is_(None), subscribers.c.last_digest_at < as_of),
    )
    return (
        subscribers.update()
        .where(deliveries.c.subscriber_id == subscribers.c.id, rows)
        .values(
            ledger_seq=sa.case((moves_mark, deliveries.c.ledger_seq), else_=subscribers.c.ledger_seq),
            last_digest_at=sa.case(
                (newer_digest, sa.literal(as_of, subscribers.c.last_digest_at.type)),
                else_=subscribers.c.last_digest_at,
            ),
        )
    )
