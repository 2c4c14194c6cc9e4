"""Planning's reads and writes, done by the database in sets rather than row by row.

Readers who share topics, ledger mark and first-digest standing get the same
selection, so planning reads them as groups (a handful, however many readers),
chooses once per group in Python, and writes the outbox with one
``INSERT ... SELECT`` per span of subscriber ids, joined to a small temporary
table of the groups' choices. No reader row travels to Python and back: at
100,000 readers this is what keeps planning within its per-recipient budget
(README, "Measured").
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.models import Cadence, DeliveryState
from newsletter.storage.part import StorePart
from newsletter.storage.schema import UTCDateTime, deliveries, subscribers
from newsletter.storage.subscribers import receiving, waiting_elsewhere

SPAN = 50_000  # subscriber ids per planning transaction: keeps each write lock short

# The groups' choices for one planning, joined to the subscribers by the INSERT.
# Temporary: private to the planning connection, gone with it.
_choices = sa.Table(
    "planning_choices",
    sa.MetaData(),
    sa.Column("topics", sa.Text, nullable=False),
    sa.Column("ledger_seq", sa.Integer),  # NULL: never planned
    sa.Column("first", sa.Integer, nullable=False),  # 1: no digest yet
    sa.Column("variant_id", sa.Integer),  # NULL: nothing for this group; its mark moves to the horizon
    sa.Column("mark", sa.Integer, nullable=False),
    sa.Column("carried", sa.Integer, nullable=False),
    prefixes=["TEMPORARY"],
)


@dataclass(frozen=True)
class ReaderGroup:
    """Readers planning cannot tell apart: same topics (as stored), mark and first-digest standing."""

    topics_key: str  # the topics column as stored, the key the INSERT joins on
    ledger_seq: int | None
    first: bool  # no digest yet
    readers: int

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(json.loads(self.topics_key) or ())


@dataclass(frozen=True)
class GroupChoice:
    """What planning chose for one group: a variant (None: nothing) and the mark and carry it records."""

    group: ReaderGroup
    variant_id: int | None
    mark: int
    carried: int = 0


class PlanningStore(StorePart):
    """Reader groups for planning, and the outbox rows written from the groups' choices."""

    def reader_groups(self, *, cadences: Sequence[Cadence] | None, edition_id: int) -> list[ReaderGroup]:
        """The groups among readers this edition may plan (see ``_plannable``), with their sizes."""
        topics_key = _topics_key()
        first = subscribers.c.last_digest_at.is_(None)
        query = (
            sa.select(topics_key, subscribers.c.ledger_seq, first, sa.func.count())
            .where(*_plannable(cadences, edition_id))
            .group_by(topics_key, subscribers.c.ledger_seq, first)
        )
        with self.engine.connect() as conn:
            return [ReaderGroup(str(t), s, bool(f), int(n)) for t, s, f, n in conn.execute(query)]

    def write_choices(
        self,
        choices: Sequence[GroupChoice],
        *,
        edition_id: int,
        cadences: Sequence[Cadence] | None,
        horizon: int,
        message_id_affixes: tuple[str, str],
        now: datetime | None = None,
    ) -> int:
        """Write one pending row per plannable reader in a group with a variant; returns how many.

        Readers in a group with nothing move their mark up to ``horizon`` (never down):
        they were judged and nothing was for them. Each span of ids is its own
        transaction and skips readers that already have a row here, so a planning
        killed midway is finished by running it again. A reader whose topics or mark
        changed since the groups were read matches no group and is left for the next
        edition, still owed (the mark did not move).
        ``message_id_affixes``: the Message-ID is prefix + the span's time mark + "." +
        128 random bits (32 hex digits, drawn by the database per row, see ``_random_hex``)
        + suffix.
        """
        now = now or self.clock()
        prefix, suffix = message_id_affixes
        with self.engine.connect() as conn:
            with conn.begin():
                _choices.create(conn, checkfirst=True)
                conn.execute(_choices.delete())
                rows = [
                    {
                        "topics": c.group.topics_key,
                        "ledger_seq": c.group.ledger_seq,
                        "first": int(c.group.first),
                        "variant_id": c.variant_id,
                        "mark": c.mark,
                        "carried": c.carried,
                    }
                    for c in choices
                ]
                if rows:
                    conn.execute(_choices.insert(), rows)
                low, high = conn.execute(
                    sa.select(sa.func.min(subscribers.c.id), sa.func.max(subscribers.c.id))
                ).one()
                before = _rows_in(conn, edition_id)
            try:
                if low is not None:
                    for start in range(low, high + 1, SPAN):
                        span = (subscribers.c.id >= start, subscribers.c.id < start + SPAN)
                        with conn.begin():
                            conn.execute(
                                _insert_rows(
                                    edition_id,
                                    cadences,
                                    span,
                                    f"{prefix}{_time_mark()}.",
                                    suffix,
                                    now,
                                    conn.dialect.name,
                                )
                            )
                            conn.execute(_advance_nothing_for(edition_id, cadences, span, horizon))
                with conn.begin():
                    # Counted, not summed from rowcount: psycopg reports -1 for INSERT ... SELECT.
                    return _rows_in(conn, edition_id) - before
            finally:
                with conn.begin():
                    _choices.drop(conn, checkfirst=True)


def _rows_in(conn: sa.Connection, edition_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(deliveries).where(deliveries.c.edition_id == edition_id)
        ).scalar_one()
    )


def _plannable(cadences: Sequence[Cadence] | None, edition_id: int) -> list[Any]:
    """Readers the edition is for that no other edition still owes, without a row here."""
    return [
        *receiving(cadences),
        ~waiting_elsewhere(edition_id),
        ~sa.select(deliveries.c.id)
        .where(deliveries.c.edition_id == edition_id, deliveries.c.subscriber_id == subscribers.c.id)
        .exists(),
    ]


def _topics_key() -> sa.ColumnElement[str]:
    # The stored JSON text: equal text, equal topics (the store always writes it one way);
    # two spellings of the same topics are merely two groups with the same choice.
    return sa.cast(subscribers.c.topics, sa.Text)


def _same_group() -> sa.ColumnElement[bool]:
    """The subscriber row belongs to the choice's group."""
    return sa.and_(
        _choices.c.topics == _topics_key(),
        _choices.c.ledger_seq.is_not_distinct_from(subscribers.c.ledger_seq),
        _choices.c.first == sa.case((subscribers.c.last_digest_at.is_(None), 1), else_=0),
    )


def _insert_rows(
    edition_id: int,
    cadences: Sequence[Cadence] | None,
    span: tuple[Any, ...],
    prefix: str,
    suffix: str,
    now: datetime,
    dialect: str,
) -> sa.Insert:
    message_id = sa.literal(prefix, sa.Text) + _random_hex(dialect) + sa.literal(suffix, sa.Text)
    chosen = (
        sa.select(
            sa.literal(edition_id, sa.Integer),
            subscribers.c.id,
            _choices.c.variant_id,
            subscribers.c.email,
            subscribers.c.name,
            message_id,
            sa.literal(DeliveryState.PENDING.value, sa.Text),
            sa.literal(0, sa.Integer),
            sa.literal(now, UTCDateTime),
            sa.literal("", sa.Text),
            _choices.c.mark,
            _choices.c.carried,
        )
        .select_from(subscribers)
        .join(_choices, sa.and_(_same_group(), _choices.c.variant_id.is_not(None)))
        .where(*span, *_plannable(cadences, edition_id))
    )
    columns = [
        "edition_id",
        "subscriber_id",
        "variant_id",
        "email",
        "name",
        "message_id",
        "state",
        "attempts",
        "updated_at",
        "last_reply",
        "ledger_seq",
        "carried",
    ]
    return deliveries.insert().from_select(columns, chosen)


def _time_mark() -> str:
    """The wall clock in microseconds, hex: the part of a Message-ID that a span's rows share.

    It proves nothing and says only when the span was planned (as the Date header does).
    It is there for the unique index on Message-IDs: with random keys alone, each insert
    lands on a random page of the whole index (at 1,000,000 rows on SQLite, 154 µs a row
    against 17 for the old ordered IDs; 28 with this mark; tests/bench/bench_message_ids.py),
    while keys that start with a later mark fill a fresh end of it.
    """
    return f"{time.time_ns() // 1000:x}"


def _random_hex(dialect: str) -> sa.ColumnElement[str]:
    """32 hex digits from the database's cryptographic generator, drawn per row.

    A Message-ID is proof of which reader a report is about, and its reader sees it: it
    must not be computable from another row's (see ``delivery.message.MessageIds``).
    SQLite: ``randomblob`` (ChaCha20 since 3.40, seeded from the OS). PostgreSQL:
    ``gen_random_uuid`` (pg_strong_random; 122 random bits each), two hashed to 128 bits.
    """
    if dialect == "postgresql":
        return sa.literal_column(
            "substr(encode(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())),"
            " 'hex'), 1, 32)",
            sa.Text,
        )
    return sa.literal_column("lower(hex(randomblob(16)))", sa.Text)


def _advance_nothing_for(
    edition_id: int, cadences: Sequence[Cadence] | None, span: tuple[Any, ...], horizon: int
) -> sa.Update:
    return (
        subscribers.update()
        .where(
            *span,
            *_plannable(cadences, edition_id),
            sa.or_(subscribers.c.ledger_seq.is_(None), subscribers.c.ledger_seq < horizon),
            sa.select(_choices.c.topics).where(_same_group(), _choices.c.variant_id.is_(None)).exists(),
        )
        .values(ledger_seq=horizon)
    )
