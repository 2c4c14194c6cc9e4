"""Finding subscribers: one page of a search by part of the address or name (the console's list).

``SubscriberSearch`` is a part of ``SubscriberStore`` (``store.subscribers``); ``as_subscriber``
turns a row into the model for every subscriber query.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from newsletter.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import subscribers


def as_subscriber(row: Any) -> Subscriber:
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


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SubscriberSearch(StorePart):
    """Search and paging over subscribers; the FTS5 trigram table of migration 0010 where there is one."""

    _search_table: bool | None = None  # SQLite: whether migration 0010 made the trigram table

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
            # No address or name holds a NUL (refused on the way in),
            # and neither database takes one in a term.
            return [], 0
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
                return [as_subscriber(r) for r in rows], total
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
        return [as_subscriber(r) for r in rows], total

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
        joined = (
            "subscribers_search CROSS JOIN subscribers ON subscribers.id = subscribers_search.rowid"
            " WHERE subscribers_search MATCH :match"
        )
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
        return [as_subscriber(r) for r in conn.execute(page, params)], total
