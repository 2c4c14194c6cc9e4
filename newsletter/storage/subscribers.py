"""Subscribers: signup, status, preferences, and the streams planning reads."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.errors import StoreError
from newsletter.models import (
    Cadence,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import deliveries, reports, subscribers, suppressions
from newsletter.storage.suppressions import SUPPRESSING, lift, mailbox_hash, suppress, suppressed_status


class SubscriberStore(StorePart):
    """Subscribers: signup, status, preferences, and the streams planning reads."""

    _search_table: bool | None = None  # SQLite: whether migration 0010 made the trigram table

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
                return _subscriber(existing), False
            held = suppressed_status(conn, email)
            reason = ""
            if held is not None and status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
                status, reason = (
                    held,
                    f"on the suppression list ({held.value}); only a confirmation or 'subscribers reactivate' brings it back",
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
                return _subscriber(row), False
            if (
                status in SUPPRESSING and held is None
            ):  # added as unsubscribed or bounced (an export re-imported)
                suppress(conn, email, status, reason=reason or f"added as {status.value}", now=now)
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

    def list_page(
        self, *, search: str = "", status: SubscriberStatus | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Subscriber], int]:
        """One page of subscribers (ordered by id) and how many match in all (exact).

        ``search`` matches part of the address or of the name, ignoring case; ``%`` and
        ``_`` are plain characters. A term of three or more characters is answered by
        migration 0010's trigram index (FTS5 on SQLite, pg_trgm GIN on PostgreSQL), so
        the count and the page read the matches, not the table. A shorter term has no
        trigram and scans 0008's narrow covering index instead (as does every term on a
        database where 0010 could not make the index).
        """
        term = search.strip()
        if "\x00" in term:
            return (
                [],
                0,
            )  # no address or name holds a NUL (refused on the way in), and neither database takes one in a term
        with self.engine.connect() as conn:
            if len(term) >= 3 and self._has_search_table(conn):
                return self._fts_page(conn, term, status, limit, offset)
            condition: sa.ColumnElement[bool] = sa.true()
            if status is not None:
                condition = sa.and_(condition, subscribers.c.status == status.value)
            if term:
                condition = sa.and_(condition, self._substring_match(term))
            total = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(subscribers).where(condition)
                ).scalar_one()
            )
            if not term or total > 3 * (offset + limit):
                # Without a search, or when matches are common: walking the table in id order
                # reaches the page after reading (offset + limit) / share-of-matches rows.
                rows = conn.execute(
                    sa.select(subscribers)
                    .where(condition)
                    .order_by(subscribers.c.id)
                    .limit(limit)
                    .offset(offset)
                ).all()
                return [_subscriber(r) for r in rows], total
            # Rare matches: ids first, ordered by "id + 0", so SQLite scans the covering search index
            # (a third of the table's bytes) and sorts the matches; then the page's rows.
            page = (
                sa.select(subscribers.c.id)
                .where(condition)
                .order_by(subscribers.c.id + 0)
                .limit(limit)
                .offset(offset)
            )
            ids = list(conn.execute(page).scalars())
            rows = (
                conn.execute(
                    sa.select(subscribers).where(subscribers.c.id.in_(ids)).order_by(subscribers.c.id)
                ).all()
                if ids
                else []
            )
        return [_subscriber(r) for r in rows], total

    def _substring_match(self, term: str) -> sa.ColumnElement[bool]:
        pattern = "%" + _like_escape(term) + "%"
        if self.engine.dialect.name == "sqlite":
            # SQLite's LIKE ignores ASCII case already (addresses are stored lower-case);
            # lower() per row would only slow the scan.
            return sa.or_(
                subscribers.c.email.like(pattern.lower(), escape="\\"),
                subscribers.c.name.like(pattern, escape="\\"),
            )
        # lower(column) LIKE is what the pg_trgm GIN indexes of migration 0010 serve.
        lowered = pattern.lower()
        return sa.or_(
            sa.func.lower(subscribers.c.email).like(lowered, escape="\\"),
            sa.func.lower(subscribers.c.name).like(lowered, escape="\\"),
        )

    def _has_search_table(self, conn: sa.Connection) -> bool:
        """Whether this SQLite database has 0010's FTS5 trigram table (asked once per store)."""
        if self.engine.dialect.name != "sqlite":
            return False
        if self._search_table is None:
            found = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'subscribers_search'"
            ).first()
            self._search_table = found is not None
        return self._search_table

    def _fts_page(
        self, conn: sa.Connection, term: str, status: SubscriberStatus | None, limit: int, offset: int
    ) -> tuple[list[Subscriber], int]:
        # A quoted phrase: every character is literal (% and _ included), and the trigram
        # tokenizer turns it into consecutive trigrams, which is exactly "contains term".
        params: dict[str, Any] = {
            "match": '"' + term.replace('"', '""') + '"',
            "limit": limit,
            "offset": offset,
        }
        # CROSS JOIN fixes the order: matches first, then their rows. Left to itself SQLite may walk
        # the status index and ask the full-text index once per row, which is slower by far.
        joined = "subscribers_search CROSS JOIN subscribers ON subscribers.id = subscribers_search.rowid WHERE subscribers_search MATCH :match"
        if status is not None:
            joined += " AND subscribers.status = :status"
            params["status"] = status.value
            count = f"SELECT count(*) FROM {joined}"
        else:
            count = "SELECT count(*) FROM subscribers_search WHERE subscribers_search MATCH :match"
        total = int(conn.execute(sa.text(count), params).scalar_one())
        columns = ", ".join(f"subscribers.{c.name}" for c in subscribers.c)
        page = sa.text(
            f"SELECT {columns} FROM {joined} ORDER BY subscribers_search.rowid LIMIT :limit OFFSET :offset"
        ).columns(*subscribers.c)
        return [_subscriber(r) for r in conn.execute(page, params)], total

    def import_batch(
        self,
        rows: Sequence[ImportRow],
        *,
        given: frozenset[str],
        update: bool = False,
        now: datetime | None = None,
    ) -> ImportCounts:
        """Insert or (with ``update``) change a batch of validated rows in one transaction.

        The rules of ``add_subscriber`` hold for every row: an address already here is
        never duplicated, and a mailbox on the suppression list is inserted with its
        suppressed status, never active or pending. A row the file marks unsubscribed or
        bounced is suppressed too, so it stays so after its row is removed. ``update``
        changes only the fields the file ``given`` (name, topics, cadence) and may move a
        reader to unsubscribed or bounced, never back to active: only `subscribers
        reactivate` or the reader's own confirmation does that. Rows must have distinct
        emails. Inserts and updates are each one ``executemany``.
        """
        now = now or self.clock()
        counts = ImportCounts()
        with self.engine.begin() as conn:
            existing: dict[str, Any] = {}
            emails = [r.email for r in rows]
            for start in range(0, len(emails), IN_CHUNK):
                query = sa.select(
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.topics,
                    subscribers.c.cadence,
                    subscribers.c.status,
                )
                for found in conn.execute(
                    query.where(subscribers.c.email.in_(emails[start : start + IN_CHUNK]))
                ):
                    existing[found.email] = found
            fresh = [r for r in rows if r.email not in existing]
            # An empty suppression list (a first import) needs no hash per row to be asked.
            listed = conn.execute(sa.select(suppressions.c.mailbox_hash).limit(1)).first() is not None
            hashes = {r.email: mailbox_hash(r.email) for r in fresh if listed or r.status in SUPPRESSING}
            held = _suppressed_statuses(conn, list(set(hashes.values()))) if listed else {}
            inserts: list[dict[str, Any]] = []
            new_suppressions: dict[str, dict[str, Any]] = {}
            for r in fresh:
                status, reason = r.status, ""
                on_list = held.get(hashes[r.email]) if listed else None
                if on_list is not None and status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
                    status, reason = (
                        on_list,
                        f"on the suppression list ({on_list.value}); only a confirmation or 'subscribers reactivate' brings it back",
                    )
                elif status in SUPPRESSING and on_list is None:
                    reason = f"imported as {status.value}"
                    new_suppressions.setdefault(
                        hashes[r.email],
                        {
                            "mailbox_hash": hashes[r.email],
                            "status": status.value,
                            "reason": reason,
                            "created_at": now,
                        },
                    )
                inserts.append(
                    {
                        "email": r.email,
                        "name": r.name,
                        "status": status.value,
                        "topics": list(r.topics),
                        "cadence": r.cadence.value,
                        "status_reason": reason,
                        "confirmed": status is SubscriberStatus.ACTIVE,
                    }
                )
                if status in SUPPRESSING:
                    counts.suppressed += 1
                else:
                    counts.added += 1
            if inserts:
                _insert_many(conn, inserts, now=now)
            if new_suppressions:
                conn.execute(suppressions.insert(), list(new_suppressions.values()))
            changes: list[dict[str, Any]] = []
            for r in rows:
                old = existing.get(r.email)
                if old is None:
                    continue
                values = _changed_fields(old, r, given) if update else {}
                leaving = (
                    update
                    and r.status in SUPPRESSING
                    and old.status in (SubscriberStatus.ACTIVE.value, SubscriberStatus.PENDING.value)
                )
                if not values and not leaving:
                    counts.unchanged += 1
                    continue
                counts.updated += 1
                if leaving:
                    reason = f"{r.status.value} in an imported file"
                    conn.execute(
                        subscribers.update()
                        .where(subscribers.c.id == old.id)
                        .values(status=r.status.value, status_reason=reason, updated_at=now, **values)
                    )
                    suppress(conn, r.email, r.status, reason=reason, now=now)
                else:
                    changes.append(
                        {
                            "row_id": old.id,
                            "new_name": values.get("name", old.name),
                            "new_topics": values.get("topics", list(old.topics or ())),
                            "new_cadence": values.get("cadence", old.cadence),
                        }
                    )
            if changes:
                _update_many(conn, changes, now=now)
        return counts

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
        """Whether id-only links made before migration 0006 may act for this subscriber (they existed then)."""
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
        yield from (_subscriber(r) for r in self._stream(query, subscribers.c.id, batch_size=batch_size))

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


IN_CHUNK = 900  # values per IN (...): under every SQLite build's variable limit


class ImportRow(NamedTuple):
    """One validated row of an import (address normalised, name and topics cleaned)."""

    email: str
    name: str
    topics: tuple[str, ...]
    status: SubscriberStatus
    cadence: Cadence


@dataclass
class ImportCounts:
    """What one import batch did: new readers, new rows held as left, changed, untouched."""

    added: int = 0
    suppressed: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: ImportCounts) -> ImportCounts:
        self.added += other.added
        self.suppressed += other.suppressed
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


INSERT_COLUMNS = (
    "email",
    "name",
    "status",
    "topics",
    "cadence",
    "status_reason",
    "confirmed_at",
    "paused",
    "legacy_links",
    "created_at",
    "updated_at",
    "ledger_seq",
)
# 12 values a row: 6,000 variables, under SQLite's limit of 32,766 (the store needs 3.35 or newer).
SQLITE_ROWS_PER_INSERT = 500


def _insert_many(conn: Any, rows: list[dict[str, Any]], *, now: datetime) -> None:
    """Insert new subscribers in bulk, the values converted once, not by SQLAlchemy row by row.

    PostgreSQL: one COPY (psycopg's ``write_row``). SQLite: multi-row INSERTs of
    ``SQLITE_ROWS_PER_INSERT`` rows. One statement per many rows matters there beyond
    the per-call cost: each statement that fires the full-text triggers (migration
    0010) makes FTS5 write out its pending index data, so one statement a row costs
    about four times the insert itself. The mark is as for one add: owed what is
    stored from now on (NULL before any report), read once for the batch.
    """
    mark = conn.execute(sa.select(sa.func.max(reports.c.seq))).scalar()
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, rows, now=now, mark=mark)
        return
    dialect = conn.dialect
    stamped, unstamped = _converted("confirmed_at", now, dialect), _converted("confirmed_at", None, dialect)
    shared = (
        _converted("paused", False, dialect),
        _converted("legacy_links", False, dialect),
        _converted("created_at", now, dialect),
        _converted("updated_at", now, dialect),
        mark,
    )
    to_topics = subscribers.c.topics.type.bind_processor(dialect) or (lambda value: value)
    # Plain strings need no conversion on SQLite: the values of a row, flat, in INSERT_COLUMNS' order.
    values = [
        (
            r["email"],
            r["name"],
            r["status"],
            to_topics(r["topics"]),
            r["cadence"],
            r["status_reason"],
            stamped if r["confirmed"] else unstamped,
            *shared,
        )
        for r in rows
    ]
    head = f"INSERT INTO subscribers ({', '.join(INSERT_COLUMNS)}) VALUES "
    one = "(" + ", ".join("?" * len(INSERT_COLUMNS)) + ")"
    for start in range(0, len(values), SQLITE_ROWS_PER_INSERT):
        chunk = values[start : start + SQLITE_ROWS_PER_INSERT]
        conn.exec_driver_sql(head + ", ".join([one] * len(chunk)), tuple(v for row in chunk for v in row))


def _update_many(conn: Any, changes: list[dict[str, Any]], *, now: datetime) -> None:
    """Change the names, topics and cadences of readers (``changes``: row_id, new_name, new_topics, new_cadence).

    On SQLite one ``UPDATE ... FROM (VALUES ...)`` per ``SQLITE_ROWS_PER_INSERT`` rows, for
    the reason ``_insert_many`` gives: a rename fires the search index's trigger, and one
    statement a row would make the index write out its pending data row by row.
    """
    if conn.dialect.name != "sqlite":
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == sa.bindparam("row_id"))
            .values(
                name=sa.bindparam("new_name"),
                topics=sa.bindparam("new_topics", type_=subscribers.c.topics.type),
                cadence=sa.bindparam("new_cadence"),
                updated_at=now,
            ),
            changes,
        )
        return
    to_topics = subscribers.c.topics.type.bind_processor(conn.dialect) or (lambda value: value)
    stamp = _converted("updated_at", now, conn.dialect)
    for start in range(0, len(changes), SQLITE_ROWS_PER_INSERT):
        chunk = changes[start : start + SQLITE_ROWS_PER_INSERT]
        conn.exec_driver_sql(
            "WITH changed (row_id, new_name, new_topics, new_cadence) AS (VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            + ")"
            " UPDATE subscribers SET name = changed.new_name, topics = changed.new_topics, cadence = changed.new_cadence, updated_at = ?"
            " FROM changed WHERE subscribers.id = changed.row_id",
            (
                *(
                    v
                    for c in chunk
                    for v in (c["row_id"], c["new_name"], to_topics(c["new_topics"]), c["new_cadence"])
                ),
                stamp,
            ),
        )


def _copy_rows(conn: Any, rows: list[dict[str, Any]], *, now: datetime, mark: int | None) -> None:
    """COPY new subscribers in, inside the caller's transaction; a refusal is a StoreError line."""
    import psycopg  # the PostgreSQL driver: only a PostgreSQL store gets here

    driver = conn.connection.driver_connection
    try:
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY subscribers ({', '.join(INSERT_COLUMNS)}) FROM STDIN") as copy,
        ):
            for r in rows:
                copy.write_row(
                    (
                        r["email"],
                        r["name"],
                        r["status"],
                        json.dumps(r["topics"]),
                        r["cadence"],
                        r["status_reason"],
                        now if r["confirmed"] else None,
                        False,
                        False,
                        now,
                        now,
                        mark,
                    )
                )
    except psycopg.Error as exc:  # raised by the driver itself, so SQLAlchemy has not wrapped it
        detail = " ".join(str(exc).split())
        if (
            exc.sqlstate == "23505"
        ):  # unique_violation: another process added one of these addresses meanwhile
            raise StoreError(
                f"the import's batch was refused: {detail}",
                hint="Another process added some of these addresses during the import; run the import again (rows already here are left unchanged).",
            ) from exc
        raise StoreError(
            f"the import's batch was refused by the database: {detail}",
            hint="This batch was not written (earlier ones were); fix the cause and run the import again: rows already here stay unchanged.",
        ) from exc


def _converted(name: str, value: Any, dialect: Any) -> Any:
    convert = subscribers.c[name].type.bind_processor(dialect)
    return convert(value) if convert else value


def _changed_fields(old: Any, row: ImportRow, given: frozenset[str]) -> dict[str, Any]:
    """The given fields whose imported value differs from the stored one."""
    values: dict[str, Any] = {}
    if "name" in given and row.name != old.name:
        values["name"] = row.name
    if "topics" in given and tuple(row.topics) != tuple(old.topics or ()):
        values["topics"] = list(row.topics)
    if "cadence" in given and row.cadence.value != old.cadence:
        values["cadence"] = row.cadence.value
    return values


def _suppressed_statuses(conn: Any, hashes: Sequence[str]) -> dict[str, SubscriberStatus]:
    """``suppressed_status`` for many mailboxes at once: {mailbox hash: status} of those on the list."""
    found: dict[str, SubscriberStatus] = {}
    for start in range(0, len(hashes), IN_CHUNK):
        query = sa.select(suppressions.c.mailbox_hash, suppressions.c.status).where(
            suppressions.c.mailbox_hash.in_(hashes[start : start + IN_CHUNK])
        )
        found.update((h, SubscriberStatus(s)) for h, s in conn.execute(query))
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
        ledger_seq=row.ledger_seq,
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
