"""Reports taken from the feed, keyed by their feed id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from newsletter.models import (
    Report,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import reports

FUTURE_TOLERANCE = timedelta(days=1)  # a report dated further ahead than this is misdated, not scheduled


class ReportStore(StorePart):
    """Reports taken from the feed, keyed by their feed id."""

    def upsert_reports(self, items: Iterable[Report], *, now: datetime | None = None) -> tuple[int, int]:
        """Store reports by id: new ids are added, changed ones updated. Returns (added, updated).

        A new report takes the next ingest sequence number (its place in the ledger); a
        changed one keeps its number, whatever its new date. Two processes adding reports
        at once may pick the same number: the unique constraint refuses the second, which
        raises IntegrityError having stored nothing (callers retry: see content.feed_state).
        """
        now = now or self.clock()
        added = updated = 0
        with self.engine.begin() as conn:
            next_seq = (
                int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.seq), 0))).scalar_one()) + 1
            )
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
                    conn.execute(self._upsert_report(report.id, now, {**values, "seq": next_seq}))
                    next_seq += 1
                    added += 1
                elif _report(row) != report:
                    conn.execute(
                        reports.update().where(reports.c.id == report.id).values(updated_at=now, **values)
                    )
                    updated += 1
        return added, updated

    def _upsert_report(self, report_id: str, now: datetime, values: dict[str, Any]) -> Any:
        dialect = self.engine.dialect.name
        row = {"id": report_id, "first_seen": now, "updated_at": now, **values}
        changed = {k: v for k, v in values.items() if k != "seq"}  # an existing report keeps its place
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return (
                postgresql.insert(reports)
                .values(**row)
                .on_conflict_do_update(index_elements=[reports.c.id], set_={"updated_at": now, **changed})
            )
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return (
                sqlite.insert(reports)
                .values(**row)
                .on_conflict_do_update(index_elements=[reports.c.id], set_={"updated_at": now, **changed})
            )
        return reports.insert().values(**row)

    # -- the ledger ---------------------------------------------------------------

    def newest_seq(self) -> int:
        """The sequence number of the newest stored report (0 when there is none)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.seq), 0))).scalar_one())

    def settled_horizon(
        self, *, as_of: datetime, settle: timedelta, future_tolerance: timedelta = FUTURE_TOLERANCE
    ) -> int:
        """The highest seq such that no report up to it is still waiting for its time at ``as_of``.

        Waiting: published after ``as_of - settle`` (settling: the publisher may still fix it,
        or dated a little ahead, as a scheduled post or a time-zone slip). Planning gives
        readers reports up to here; a waiting report holds back everything stored after it,
        so that a reader's mark never passes a report they have not been given. A date more
        than ``future_tolerance`` ahead is taken for a mistake of the feed and holds nothing
        back (`misdated_reports` names them), or one wrong year would stop every digest.
        """
        with self.engine.connect() as conn:
            first_unsettled = conn.execute(
                sa.select(sa.func.min(reports.c.seq)).where(
                    reports.c.published > as_of - settle, reports.c.published <= as_of + future_tolerance
                )
            ).scalar()
            if first_unsettled is not None:
                return int(first_unsettled) - 1
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.seq), 0))).scalar_one())

    def misdated_reports(
        self, *, as_of: datetime, upto: int, future_tolerance: timedelta = FUTURE_TOLERANCE
    ) -> list[Report]:
        """Reports up to ``upto`` dated more than ``future_tolerance`` after ``as_of``: sent with
        their date as given."""
        query = (
            sa.select(reports)
            .where(reports.c.seq <= upto, reports.c.published > as_of + future_tolerance)
            .order_by(reports.c.seq)
        )
        with self.engine.connect() as conn:
            return [_report(r) for r in conn.execute(query)]

    def ledger_reports(self, *, after: int, upto: int) -> list[Report]:
        """Reports with ``after < seq <= upto``, in ledger order (oldest stored first)."""
        query = sa.select(reports).where(reports.c.seq > after, reports.c.seq <= upto).order_by(reports.c.seq)
        with self.engine.connect() as conn:
            return [_report(r) for r in conn.execute(query)]

    def recent_reports(
        self, *, limit: int = 200, published_before: datetime | None = None, upto_seq: int | None = None
    ) -> list[Report]:
        """The newest reports first (at most ``limit``), optionally only those published before a
        time, or stored at or before a ledger position."""
        query = sa.select(reports).order_by(reports.c.published.desc(), reports.c.id).limit(limit)
        if published_before is not None:
            query = query.where(reports.c.published <= published_before)
        if upto_seq is not None:
            query = query.where(reports.c.seq <= upto_seq)
        with self.engine.connect() as conn:
            return [_report(r) for r in conn.execute(query)]

    def get_reports(self, ids: Sequence[str]) -> list[Report]:
        with self.engine.connect() as conn:
            rows = {
                r.id: _report(r) for r in conn.execute(sa.select(reports).where(reports.c.id.in_(list(ids))))
            }
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


def _report(row: Any) -> Report:
    return Report(
        id=row.id,
        title=row.title,
        url=row.url,
        published=row.published,
        teaser=row.teaser,
        topics=tuple(row.topics or ()),
        members_only=bool(row.members_only),
        seq=int(row.seq),
    )
