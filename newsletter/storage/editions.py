"""Editions and their variants (one rendered digest per distinct report set)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.models import (
    Edition,
    EditionStatus,
    Variant,
)
from newsletter.storage.part import StorePart
from newsletter.storage.schema import deliveries, editions, variants

# Editions whose digests went out (fully or partly) may be shown in the archive.
PUBLISHED = (EditionStatus.SENT.value, EditionStatus.SENDING.value)


@dataclass(frozen=True)
class ArchiveEntry:
    variant_id: int
    edition_id: int
    subject: str
    report_count: int
    sent_at: datetime | None


class EditionStore(StorePart):
    """Editions and their variants (one rendered digest per distinct report set)."""

    def create_edition(
        self,
        *,
        key: str,
        schedule: str,
        as_of: datetime,
        now: datetime | None = None,
        skipped_because: str | None = None,
    ) -> tuple[Edition, bool]:
        """Create the edition with this key, or return the existing one: (edition, created).

        The key is unique in the database, so two processes racing for one slot get one edition.
        ``skipped_because`` creates it already skipped with that reason, in the same INSERT:
        an edition created "planned" and skipped a moment later could be taken up and sent
        in between by a sender resuming unfinished editions.
        """
        now = now or self.clock()
        born: dict[str, Any] = {"status": EditionStatus.PLANNED.value, "reason": ""}
        if skipped_because is not None:
            born = {
                "status": EditionStatus.SKIPPED.value,
                "reason": skipped_because[:1000],
                "finished_at": now,
            }
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(
                    editions.insert().values(key=key, schedule=schedule, as_of=as_of, created_at=now, **born)
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

    def last_slot(self, schedule: str) -> datetime | None:
        """The latest as_of of the schedule's editions, whatever became of them (None: none yet).

        The scheduler starts from here: a slot after it that has passed was missed.
        """
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.max(editions.c.as_of)).where(editions.c.schedule == schedule)
            ).scalar()

    def get_edition(self, edition_id: int) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(editions).where(editions.c.id == edition_id)).first()
        return _edition(row, self.delivery_counts(edition_id)) if row else None

    def list_editions(
        self, *, limit: int = 50, statuses: Sequence[EditionStatus] | None = None
    ) -> list[Edition]:
        query = sa.select(editions).order_by(editions.c.id.desc()).limit(limit)
        if statuses:
            query = query.where(editions.c.status.in_([s.value for s in statuses]))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_edition(r, self.delivery_counts(r.id)) for r in rows]

    def set_edition_status(
        self,
        edition_id: int,
        status: EditionStatus,
        *,
        reason: str | None = None,
        now: datetime | None = None,
        only_from: Sequence[EditionStatus] | None = None,
    ) -> bool:
        """Move the edition to ``status``; with ``only_from``, only if it is in one of those
        statuses now (one UPDATE, so a change another process made meanwhile wins). True if moved."""
        now = now or self.clock()
        values: dict[str, Any] = {"status": status.value}
        if reason is not None:
            values["reason"] = reason[:1000]
        if status is EditionStatus.SENDING:
            values["started_at"] = sa.func.coalesce(editions.c.started_at, now)
            values["finished_at"] = None  # resumed after a pause: no longer finished
        if status in (EditionStatus.SENT, EditionStatus.FAILED, EditionStatus.SKIPPED, EditionStatus.PAUSED):
            values["finished_at"] = now
        query = editions.update().where(editions.c.id == edition_id)
        if only_from is not None:
            query = query.where(editions.c.status.in_([s.value for s in only_from]))
        with self.engine.begin() as conn:
            return conn.execute(query.values(**values)).rowcount > 0

    def add_variant(
        self, *, edition_id: int, report_ids: Sequence[str], subject: str, html: str, text: str
    ) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    variants.insert().values(
                        edition_id=edition_id,
                        report_ids=list(report_ids),
                        subject=subject,
                        html=html,
                        text=text,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    def set_variant_content(self, variant_id: int, *, subject: str, html: str, text: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                variants.update()
                .where(variants.c.id == variant_id)
                .values(subject=subject, html=html, text=text)
            )

    def list_variants(self, edition_id: int) -> list[Variant]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(variants).where(variants.c.edition_id == edition_id).order_by(variants.c.id)
            ).all()
        return [_variant(r) for r in rows]

    def delivery_counts(self, edition_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.state, sa.func.count())
                .where(deliveries.c.edition_id == edition_id)
                .group_by(deliveries.c.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def archive_entries(self, *, limit: int = 200) -> list[ArchiveEntry]:
        """One entry per published edition, newest first, without loading any HTML.

        An edition's variants are the same issue cut per reader (their report sets
        differ); the public archive shows it once, as its fullest variant.
        """
        newest = (
            sa.select(editions.c.id)
            .where(editions.c.status.in_(PUBLISHED))
            .order_by(editions.c.id.desc())
            .limit(limit)
        )
        query = (
            sa.select(
                variants.c.id,
                variants.c.edition_id,
                variants.c.subject,
                variants.c.report_ids,
                editions.c.started_at,
                editions.c.as_of,
            )
            .join(editions, editions.c.id == variants.c.edition_id)
            .where(variants.c.edition_id.in_(newest), variants.c.subject != "")
            .order_by(editions.c.id.desc(), variants.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        fullest: dict[int, Any] = {}
        for r in rows:  # the first variant with the most reports stands for its edition
            if r.edition_id not in fullest or len(r.report_ids or ()) > len(
                fullest[r.edition_id].report_ids or ()
            ):
                fullest[r.edition_id] = r
        return [
            ArchiveEntry(r.id, r.edition_id, r.subject, len(r.report_ids or ()), r.started_at or r.as_of)
            for r in fullest.values()
        ]

    def published_variant_html(self, variant_id: int) -> str | None:
        """The stored HTML of a variant whose edition was published, else None."""
        query = (
            sa.select(variants.c.html)
            .join(editions, editions.c.id == variants.c.edition_id)
            .where(variants.c.id == variant_id, editions.c.status.in_(PUBLISHED))
        )
        with self.engine.connect() as conn:
            html = conn.execute(query).scalar()
        return html or None


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


def _variant(r: Any) -> Variant:
    return Variant(r.id, r.edition_id, tuple(r.report_ids), r.subject, r.html, r.text)
