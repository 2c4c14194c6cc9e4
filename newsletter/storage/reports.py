"""Reports taken from the feed, keyed by their feed id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.models import (
    Report,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import reports


class ReportStore(StorePart):
    """Reports taken from the feed, keyed by their feed id."""

    def upsert_reports(self, items: Iterable[Report], *, now: datetime | None = None) -> tuple[int, int]:
        """Store reports by id: new ids are added, changed ones updated. Returns (added, updated)."""
        now = now or self.clock()
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
