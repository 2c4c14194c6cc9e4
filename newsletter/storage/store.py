"""The database: SQLAlchemy Core tables and every query the service runs.

SQLite by default, any SQLAlchemy URL (PostgreSQL through psycopg 3) by
``database.url``. Times are stored in UTC and always returned timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from newsletter.errors import StoreError
from newsletter.models import (
    Cadence,
    Delivery,
    DeliveryState,
    Edition,
    EditionStatus,
    Report,
    Subscriber,
    SubscriberStatus,
    Variant,
)


class PlanningRow(NamedTuple):
    """One recipient as planning sees it."""

    id: int
    email: str
    name: str
    topics: tuple[str, ...]
    last_digest_at: datetime | None


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime that stores UTC and returns aware datetimes on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware one")
        value = value.astimezone(timezone.utc)
        # SQLite keeps no offset; store naive UTC so string comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("topics", sa.JSON, nullable=False, default=list),
    sa.Column("cadence", sa.String(10), nullable=False, default="daily"),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_digest_at", UTCDateTime),
    sa.Column("confirmation_sent_at", UTCDateTime),
    sa.Column("status_reason", sa.String(300), nullable=False, default=""),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(500), primary_key=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("published", UTCDateTime, nullable=False, index=True),
    sa.Column("teaser", sa.Text, nullable=False),
    sa.Column("topics", sa.JSON, nullable=False),
    sa.Column("members_only", sa.Boolean, nullable=False, default=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(200), nullable=False, unique=True),
    sa.Column("schedule", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("as_of", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("reason", sa.String(1000), nullable=False, default=""),
)

variants = sa.Table(
    "variants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id"), nullable=False, index=True),
    sa.Column("report_ids", sa.JSON, nullable=False),
    sa.Column("subject", sa.String(500), nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id"), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("variant_id", sa.Integer, sa.ForeignKey("variants.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("message_id", sa.String(300), nullable=False, unique=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("last_code", sa.Integer),
    sa.Column("last_reply", sa.String(1000), nullable=False, default=""),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("claimed_by", sa.String(200)),  # "host:pid" of the sender holding the row
    sa.Column("lease_until", UTCDateTime),  # a 'sending' row whose lease ran out is claimable again
    sa.UniqueConstraint("edition_id", "subscriber_id", name="uq_delivery_edition_subscriber"),
    sa.Index("ix_deliveries_edition_state_id", "edition_id", "state", "id"),
)

bounce_events = sa.Table(
    "bounce_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("delivery_id", sa.Integer),
    sa.Column("kind", sa.String(10), nullable=False),  # hard | soft
    sa.Column("code", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False, default=""),  # enhanced status, e.g. 5.1.1
    sa.Column("reply", sa.String(1000), nullable=False, default=""),
    sa.Column("source", sa.String(20), nullable=False),  # smtp | dsn
    sa.Column("at", UTCDateTime, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_sqlite_parent(url: str) -> Path | None:
    """The directory a file-backed SQLite URL needs, or None for other URLs."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///")).parent
    return None


class Store:
    """All reads and writes of the service's tables.

    One Store per process; it owns the SQLAlchemy engine. Methods commit their
    own transaction unless they say otherwise.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        parent = default_sqlite_parent(url)
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        try:
            connect_args: dict[str, Any] = {}
            if url.startswith("sqlite"):
                # Several threads (sender connections, web) share the engine; SQLite
                # serialises writers itself, a busy timeout makes them wait instead of fail.
                connect_args = {"check_same_thread": False, "timeout": 30}
            self.engine: Engine = sa.create_engine(url, connect_args=connect_args, future=True)
            if url.startswith("sqlite"):
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database {url!r}: {_one_line(exc)}") from exc
        self.url = url
        if create:
            self.create_schema()

    # -- schema ---------------------------------------------------------------

    def create_schema(self) -> None:
        """Bring a fresh database to the newest schema; refuse one that is behind (see newsletter.storage.migrations)."""
        from newsletter.storage.migrations import ensure_schema

        try:
            ensure_schema(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.url!r}: {_one_line(exc.orig)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # -- subscribers ------------------------------------------------------------

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
        """Insert a subscriber unless the (normalised) email exists; returns (row, created)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            existing = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).first()
            if existing is not None:
                return _subscriber(existing), False
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
                        status_reason="",
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            except IntegrityError:
                # Another process inserted the same address between our check and insert.
                row = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).one()
                return _subscriber(row), False
            row = conn.execute(sa.select(subscribers).where(subscribers.c.id == new_id)).one()
            return _subscriber(row), True

    def get_subscriber(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return _subscriber(row) if row else None

    def find_subscriber(self, email: str) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).first()
        return _subscriber(row) if row else None

    def list_subscribers(self, *, status: SubscriberStatus | None = None) -> Iterator[Subscriber]:
        """Every subscriber ordered by id, streamed in batches."""
        query = sa.select(subscribers).order_by(subscribers.c.id)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        yield from (_subscriber(r) for r in self._stream(query, subscribers.c.id))

    def remove_subscriber(self, email: str) -> bool:
        """Delete a subscriber and their delivery history; False if unknown."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email == email)).first()
            if row is None:
                return False
            conn.execute(deliveries.delete().where(deliveries.c.subscriber_id == row.id))
            conn.execute(subscribers.delete().where(subscribers.c.id == row.id))
            return True

    def set_status(self, subscriber_id: int, status: SubscriberStatus, *, reason: str = "", now: datetime | None = None) -> bool:
        """Change a subscriber's status; True if the row changed (idempotent)."""
        now = now or utcnow()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "status_reason": reason[:300]}
        if status is SubscriberStatus.ACTIVE:
            values["confirmed_at"] = now
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id, subscribers.c.status != status.value)
                .values(**values)
            )
            return result.rowcount > 0

    def update_preferences(self, subscriber_id: int, *, topics: Sequence[str], cadence: Cadence, paused: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(topics=list(topics), cadence=cadence.value, paused=paused, updated_at=utcnow())
            )

    def mark_confirmation_sent(self, subscriber_id: int, when: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(confirmation_sent_at=when))

    def confirmation_sent_at(self, subscriber_id: int) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(subscribers.c.confirmation_sent_at).where(subscribers.c.id == subscriber_id)
            ).scalar()

    def iter_recipients(self, *, cadences: Sequence[Cadence] | None = None, batch_size: int = 2000) -> Iterator[Subscriber]:
        """Active, unpaused subscribers (optionally of some cadences), streamed by id."""
        query = sa.select(subscribers).where(
            subscribers.c.status == SubscriberStatus.ACTIVE.value, subscribers.c.paused == sa.false()
        )
        if cadences is not None:
            query = query.where(subscribers.c.cadence.in_([c.value for c in cadences]))
        yield from (_subscriber(r) for r in self._stream(query, subscribers.c.id, batch_size=batch_size))

    def iter_planning_rows(self, *, cadences: Sequence[Cadence] | None = None, batch_size: int = 2000) -> Iterator["PlanningRow"]:
        """What planning needs of each active, unpaused subscriber: light rows, streamed by id."""
        query = sa.select(
            subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.topics, subscribers.c.last_digest_at
        ).where(subscribers.c.status == SubscriberStatus.ACTIVE.value, subscribers.c.paused == sa.false())
        if cadences is not None:
            query = query.where(subscribers.c.cadence.in_([c.value for c in cadences]))
        for r in self._stream(query, subscribers.c.id, batch_size=batch_size):
            yield PlanningRow(r.id, r.email, r.name, tuple(r.topics or ()), r.last_digest_at)

    def _stream(self, query: sa.Select[Any], key: sa.Column[Any], *, batch_size: int = 2000) -> Iterator[Any]:
        """Keyset pagination: never holds more than one batch, and no long-lived cursor."""
        last: Any = None
        while True:
            page = query.order_by(key).limit(batch_size)
            if last is not None:
                page = page.where(key > last)
            with self.engine.connect() as conn:
                rows = conn.execute(page).all()
            if not rows:
                return
            yield from rows
            last = getattr(rows[-1], key.name)

    # -- reports ------------------------------------------------------------------

    def upsert_reports(self, items: Iterable[Report], *, now: datetime | None = None) -> tuple[int, int]:
        """Store reports by id: new ids are added, changed ones updated. Returns (added, updated)."""
        now = now or utcnow()
        added = updated = 0
        with self.engine.begin() as conn:
            for report in items:
                values = {
                    "title": report.title,
                    "url": report.url,
                    "published": report.published,
                    "teaser": report.teaser,
                    "topics": list(report.topics),
                    "members_only": report.members_only,
                }
                row = conn.execute(sa.select(reports).where(reports.c.id == report.id)).first()
                if row is None:
                    # Two processes ingesting at once (daily and weekly fire together) may both
                    # see the id missing: the upsert makes the second insert an update.
                    conn.execute(self._upsert_report(report.id, now, values))
                    added += 1
                elif _report(row) != report:
                    conn.execute(reports.update().where(reports.c.id == report.id).values(updated_at=now, **values))
                    updated += 1
        return added, updated

    def _upsert_report(self, report_id: str, now: datetime, values: dict[str, Any]) -> Any:
        dialect = self.engine.dialect.name
        row = {"id": report_id, "first_seen": now, "updated_at": now, **values}
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(reports).values(**row).on_conflict_do_update(index_elements=[reports.c.id], set_={"updated_at": now, **values})
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(reports).values(**row).on_conflict_do_update(index_elements=[reports.c.id], set_={"updated_at": now, **values})
        return reports.insert().values(**row)

    def recent_reports(self, *, limit: int = 200, published_before: datetime | None = None) -> list[Report]:
        """The newest reports first (at most ``limit``), optionally only those published before a time."""
        query = sa.select(reports).order_by(reports.c.published.desc(), reports.c.id).limit(limit)
        if published_before is not None:
            query = query.where(reports.c.published <= published_before)
        with self.engine.connect() as conn:
            return [_report(r) for r in conn.execute(query)]

    def get_reports(self, ids: Sequence[str]) -> list[Report]:
        with self.engine.connect() as conn:
            rows = {r.id: _report(r) for r in conn.execute(sa.select(reports).where(reports.c.id.in_(list(ids))))}
        return [rows[i] for i in ids if i in rows]

    def count_reports(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(reports)).scalar_one())

    def all_topics(self) -> list[str]:
        """Every topic any stored report carries, sorted."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for (topics,) in conn.execute(sa.select(reports.c.topics)):
                found.update(topics or ())
        return sorted(found)

    # -- editions -----------------------------------------------------------------

    def create_edition(self, *, key: str, schedule: str, as_of: datetime, now: datetime | None = None) -> tuple[Edition, bool]:
        """Create the edition with this key, or return the existing one: (edition, created).

        The key is unique in the database, so two processes racing for one slot get one edition.
        """
        now = now or utcnow()
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(
                    editions.insert().values(
                        key=key, schedule=schedule, status=EditionStatus.PLANNED.value, as_of=as_of, created_at=now, reason=""
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
        except IntegrityError:
            existing = self.find_edition(key)
            assert existing is not None
            return existing, False
        edition = self.get_edition(int(new_id))
        assert edition is not None
        return edition, True

    def find_edition(self, key: str) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(editions).where(editions.c.key == key)).first()
        return _edition(row) if row else None

    def get_edition(self, edition_id: int) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(editions).where(editions.c.id == edition_id)).first()
        return _edition(row, self.delivery_counts(edition_id)) if row else None

    def list_editions(self, *, limit: int = 50, statuses: Sequence[EditionStatus] | None = None) -> list[Edition]:
        query = sa.select(editions).order_by(editions.c.id.desc()).limit(limit)
        if statuses:
            query = query.where(editions.c.status.in_([s.value for s in statuses]))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_edition(r, self.delivery_counts(r.id)) for r in rows]

    def set_edition_status(self, edition_id: int, status: EditionStatus, *, reason: str | None = None, now: datetime | None = None) -> None:
        now = now or utcnow()
        values: dict[str, Any] = {"status": status.value}
        if reason is not None:
            values["reason"] = reason[:1000]
        if status is EditionStatus.SENDING:
            values["started_at"] = sa.func.coalesce(editions.c.started_at, now)
        if status in (EditionStatus.SENT, EditionStatus.FAILED, EditionStatus.SKIPPED, EditionStatus.PAUSED):
            values["finished_at"] = now
        with self.engine.begin() as conn:
            conn.execute(editions.update().where(editions.c.id == edition_id).values(**values))

    # -- variants -----------------------------------------------------------------

    def add_variant(self, *, edition_id: int, report_ids: Sequence[str], subject: str, html: str, text: str) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    variants.insert().values(edition_id=edition_id, report_ids=list(report_ids), subject=subject, html=html, text=text)
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    def set_variant_content(self, variant_id: int, *, subject: str, html: str, text: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(variants.update().where(variants.c.id == variant_id).values(subject=subject, html=html, text=text))

    def subscribers_with_rows(self, edition_id: int, subscriber_ids: Sequence[int]) -> set[int]:
        """Which of these subscribers already have an outbox row in the edition (resumed planning)."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(deliveries.c.subscriber_id).where(
                        deliveries.c.edition_id == edition_id, deliveries.c.subscriber_id.in_(list(subscriber_ids))
                    )
                ).scalars()
            )

    def record_bounce(
        self, *, subscriber_id: int, delivery_id: int | None, kind: str, code: int | None, status: str, reply: str, source: str, now: datetime | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                bounce_events.insert().values(
                    subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, code=code, status=status, reply=reply[:1000], source=source, at=now or utcnow()
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

    def inactive_since(self, since: datetime) -> set[int]:
        """Subscribers that stopped being active (unsubscribed, bounced, paused) at or after ``since``."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(subscribers.c.id).where(
                        subscribers.c.updated_at >= since,
                        sa.or_(subscribers.c.status != SubscriberStatus.ACTIVE.value, subscribers.c.paused == sa.true()),
                    )
                ).scalars()
            )

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return _delivery(r) if r else None

    def find_delivery_by_message_id(self, message_id: str) -> Delivery | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(deliveries).where(deliveries.c.message_id == message_id)).first()
        return _delivery(r) if r else None

    def set_rows_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str = "") -> None:
        if not ids:
            return
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_(list(ids[start : start + 500])))
                    .values(state=state.value, updated_at=utcnow(), last_reply=reply)
                )

    def list_variants(self, edition_id: int) -> list[Variant]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(variants).where(variants.c.edition_id == edition_id).order_by(variants.c.id)).all()
        return [_variant(r) for r in rows]

    # -- deliveries ---------------------------------------------------------------

    def add_deliveries(self, rows: Sequence[dict[str, Any]], *, now: datetime | None = None) -> None:
        """Insert outbox rows (edition_id, subscriber_id, variant_id, email, name, message_id) as pending."""
        if not rows:
            return
        now = now or utcnow()
        payload = [{**r, "state": DeliveryState.PENDING.value, "attempts": 0, "updated_at": now, "last_reply": ""} for r in rows]
        with self.engine.begin() as conn:
            conn.execute(deliveries.insert(), payload)

    def claim_deliveries(
        self, edition_id: int, *, limit: int, worker: str = "", lease_seconds: int = 300, now: datetime | None = None
    ) -> list[Delivery]:
        """Take up to ``limit`` due rows and mark them sending under a lease held by ``worker``.

        Due: pending, deferred whose next attempt has come, or sending whose lease
        ran out (its sender died on another machine). On PostgreSQL the rows are
        locked with FOR UPDATE SKIP LOCKED, so several senders never take the same
        row. Rows whose subscriber is no longer active (or paused) are marked
        suppressed instead, so an unsubscribe or bounce during a send is honoured.
        """
        now = now or utcnow()
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
            take = [r for r in rows if r.subscriber_status == SubscriberStatus.ACTIVE.value and not r.subscriber_paused]
            gone = [r.id for r in rows if r.subscriber_status != SubscriberStatus.ACTIVE.value or r.subscriber_paused]
            for start in range(0, len(take), 500):
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_([r.id for r in take[start : start + 500]]))
                    .values(
                        state=DeliveryState.SENDING.value,
                        attempts=deliveries.c.attempts + 1,
                        updated_at=now,
                        claimed_by=worker,
                        lease_until=lease_until,
                    )
                )
            for start in range(0, len(gone), 500):
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_(gone[start : start + 500]))
                    .values(state=DeliveryState.SUPPRESSED.value, updated_at=now, last_reply="subscriber no longer active")
                )
        return [
            Delivery(r.id, r.edition_id, r.subscriber_id, r.variant_id, r.email, r.name, r.message_id, DeliveryState.SENDING, r.attempts + 1)
            for r in take
        ]

    def renew_lease(self, edition_id: int, *, worker: str, lease_seconds: int, now: datetime | None = None) -> None:
        """Extend the lease of every row this worker still holds as sending."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.edition_id == edition_id,
                    deliveries.c.state == DeliveryState.SENDING.value,
                    deliveries.c.claimed_by == worker,
                )
                .values(lease_until=now + timedelta(seconds=lease_seconds))
            )

    def sending_rows(self, edition_id: int) -> list[tuple[int, int, str]]:
        """(row id, subscriber id, claimed_by) of every row left sending."""
        with self.engine.connect() as conn:
            return [
                (r.id, r.subscriber_id, r.claimed_by or "")
                for r in conn.execute(
                    sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.claimed_by).where(
                        deliveries.c.edition_id == edition_id, deliveries.c.state == DeliveryState.SENDING.value
                    )
                )
            ]

    def claimable_editions(self, *, now: datetime | None = None) -> list[int]:
        """Editions in progress that have rows a worker could take now."""
        now = now or utcnow()
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
                            sa.and_(deliveries.c.state == DeliveryState.DEFERRED.value, deliveries.c.next_attempt_at <= now),
                            sa.and_(deliveries.c.state == DeliveryState.SENDING.value, deliveries.c.lease_until < now),
                        ),
                    )
                ).scalars()
            )

    def record_outcomes(self, outcomes: Sequence["DeliveryOutcome"], *, as_of: datetime, now: datetime | None = None) -> None:
        """Commit a batch of send results in one transaction.

        A sent row also moves its subscriber's "last digest" mark to the edition's
        ``as_of``, so the next edition starts after it.
        """
        if not outcomes:
            return
        now = now or utcnow()
        sent = [o for o in outcomes if o.state is DeliveryState.SENT]
        others = [o for o in outcomes if o.state is not DeliveryState.SENT]
        with self.engine.begin() as conn:
            for start in range(0, len(sent), 500):
                chunk = sent[start : start + 500]
                # One statement for a batch of sent rows: the common case stays cheap at scale.
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_([o.delivery_id for o in chunk]))
                    .values(state=DeliveryState.SENT.value, updated_at=now, sent_at=now, last_code=250, last_reply="", next_attempt_at=None)
                )
            for outcome in others:
                values: dict[str, Any] = {
                    "state": outcome.state.value,
                    "updated_at": now,
                    "last_code": outcome.code,
                    "last_reply": outcome.reply[:1000],
                    "next_attempt_at": outcome.next_attempt_at,
                }
                conn.execute(deliveries.update().where(deliveries.c.id == outcome.delivery_id).values(**values))
            sent_subscribers = [o.subscriber_id for o in sent]
            for start in range(0, len(sent_subscribers), 500):
                conn.execute(
                    subscribers.update()
                    .where(
                        subscribers.c.id.in_(sent_subscribers[start : start + 500]),
                        sa.or_(subscribers.c.last_digest_at.is_(None), subscribers.c.last_digest_at < as_of),
                    )
                    .values(last_digest_at=as_of)
                )

    def requeue_unknown(self, edition_id: int) -> int:
        """Put 'unknown' rows back to pending so a resume sends them again (same Message-ID)."""
        with self.engine.begin() as conn:
            return conn.execute(
                deliveries.update()
                .where(deliveries.c.edition_id == edition_id, deliveries.c.state == DeliveryState.UNKNOWN.value)
                .values(state=DeliveryState.PENDING.value, updated_at=utcnow())
            ).rowcount

    def delivery_counts(self, edition_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.state, sa.func.count())
                .where(deliveries.c.edition_id == edition_id)
                .group_by(deliveries.c.state)
            ).all()
        return {state: int(n) for state, n in rows}

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
                    deliveries.c.state.in_([DeliveryState.FAILED.value, DeliveryState.DEFERRED.value, DeliveryState.UNKNOWN.value]),
                )
                .group_by(deliveries.c.last_code, deliveries.c.last_reply)
                .order_by(sa.text("n DESC"))
                .limit(limit)
            ).all()
        return [(r.last_code, r.last_reply, int(r.n)) for r in rows]

    def next_due(self, edition_id: int) -> datetime | None:
        """When the earliest deferred row of an edition is due, if any."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.edition_id == edition_id, deliveries.c.state == DeliveryState.DEFERRED.value
                )
            ).scalar()


from newsletter.models import DeliveryOutcome  # noqa: E402  (value type, kept beside the sender)


def _one_line(error: object) -> str:
    # Driver messages (psycopg's above all) span lines; an operator error is one line.
    return " ".join(str(error).split())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the web app read while a send writes; NORMAL sync is safe with WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _subscriber(row: Any) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        status=SubscriberStatus(row.status),
        topics=tuple(row.topics or ()),
        cadence=Cadence(row.cadence),
        paused=bool(row.paused),
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        last_digest_at=row.last_digest_at,
        updated_at=row.updated_at,
    )


def _delivery(r: Any) -> Delivery:
    return Delivery(r.id, r.edition_id, r.subscriber_id, r.variant_id, r.email, r.name, r.message_id, DeliveryState(r.state), r.attempts)


def _variant(r: Any) -> Variant:
    return Variant(r.id, r.edition_id, tuple(r.report_ids), r.subject, r.html, r.text)


def _report(row: Any) -> Report:
    return Report(
        id=row.id,
        title=row.title,
        url=row.url,
        published=row.published,
        teaser=row.teaser,
        topics=tuple(row.topics or ()),
        members_only=bool(row.members_only),
    )


def _edition(row: Any, counts: dict[str, int] | None = None) -> Edition:
    return Edition(
        id=row.id,
        key=row.key,
        schedule=row.schedule,
        status=EditionStatus(row.status),
        as_of=row.as_of,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        reason=row.reason or "",
        counts=counts or {},
    )
