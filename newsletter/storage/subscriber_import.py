"""Importing subscribers in batches: validated rows inserted or changed in bulk, the suppression list kept.

``SubscriberImports`` is a part of ``SubscriberStore`` (``store.subscribers.import_batch``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from newsletter.errors import StoreError
from newsletter.models import (
    Cadence,
    SubscriberStatus,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import reports, subscribers, suppressions
from newsletter.storage.suppressions import SUPPRESSING, mailbox_hash, suppress

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


class SubscriberImports(StorePart):
    """The bulk import of subscribers."""

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
            existing = _existing(conn, [r.email for r in rows])
            _insert_fresh(conn, [r for r in rows if r.email not in existing], counts, now=now)
            known = [(r, existing[r.email]) for r in rows if r.email in existing]
            _change_known(conn, known, counts, given=given if update else None, now=now)
        return counts


def _existing(conn: Any, emails: list[str]) -> dict[str, Any]:
    """The stored rows (id, email, name, topics, cadence, status) of those of ``emails`` already here."""
    existing: dict[str, Any] = {}
    query = sa.select(
        subscribers.c.id,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.topics,
        subscribers.c.cadence,
        subscribers.c.status,
    )
    for start in range(0, len(emails), IN_CHUNK):
        for found in conn.execute(query.where(subscribers.c.email.in_(emails[start : start + IN_CHUNK]))):
            existing[found.email] = found
    return existing


def _insert_fresh(conn: Any, fresh: list[ImportRow], counts: ImportCounts, *, now: datetime) -> None:
    """Insert the rows of new addresses, held as suppressed if their mailbox is on the suppression
    list, and put those the file marks unsubscribed or bounced on the list; counted in ``counts``."""
    # An empty suppression list (a first import) needs no hash per row to be asked.
    listed = conn.execute(sa.select(suppressions.c.mailbox_hash).limit(1)).first() is not None
    hashes = {r.email: mailbox_hash(r.email) for r in fresh if listed or r.status in SUPPRESSING}
    held = _suppressed_statuses(conn, list(set(hashes.values()))) if listed else {}
    inserts: list[dict[str, Any]] = []
    new_suppressions: dict[str, dict[str, Any]] = {}
    for r in fresh:
        on_list = held.get(hashes[r.email]) if listed else None
        status, reason = _fresh_status(r.status, on_list)
        if status in SUPPRESSING and on_list is None:
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


def _fresh_status(status: SubscriberStatus, on_list: SubscriberStatus | None) -> tuple[SubscriberStatus, str]:
    """The status and reason a new row is stored with: the list's status over active or pending."""
    if on_list is not None and status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
        return (
            on_list,
            f"on the suppression list ({on_list.value});"
            " only a confirmation or 'subscribers reactivate' brings it back",
        )
    if status in SUPPRESSING and on_list is None:
        return status, f"imported as {status.value}"
    return status, ""


def _change_known(
    conn: Any,
    known: list[tuple[ImportRow, Any]],
    counts: ImportCounts,
    *,
    given: frozenset[str] | None,
    now: datetime,
) -> None:
    """Change readers already here (imported row, stored row) in the ``given`` fields, moving an
    active or pending one the file marks unsubscribed or bounced to that status; ``given`` None
    (no update asked) changes nothing. Counted in ``counts``."""
    changes: list[dict[str, Any]] = []
    for r, old in known:
        values = _changed_fields(old, r, given) if given is not None else {}
        leaving = (
            given is not None
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
    """Change the names, topics and cadences of readers
    (``changes``: row_id, new_name, new_topics, new_cadence).

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
            " UPDATE subscribers SET name = changed.new_name, topics = changed.new_topics,"
            " cadence = changed.new_cadence, updated_at = ?"
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
                hint="Another process added some of these addresses during the import;"
                " run the import again (rows already here are left unchanged).",
            ) from exc
        raise StoreError(
            f"the import's batch was refused by the database: {detail}",
            hint="This batch was not written (earlier ones were); fix the cause and run the import again:"
            " rows already here stay unchanged.",
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
