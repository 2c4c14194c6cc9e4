"""Planning an edition: the ledger of reports owed, what each reader gets, and the outbox rows.

``EditionPlanner`` is the engine's planning half (``EditionRunner`` owns one): it
reads the settled reports into a ``Ledger``, chooses each reader group's reports,
renders each distinct report set once (a variant) and has the database write one
outbox row per recipient. It sends nothing and holds no lock: the runner calls
``write_outbox`` holding the planning lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.content.planner import Ledger, Selection, select_reports
from newsletter.content.render import DigestRenderer
from newsletter.delivery.message import MessageIds
from newsletter.errors import AudienceChanged
from newsletter.models import Cadence, Edition, EditionStatus, Report, Subscriber
from newsletter.storage.planning import GroupChoice, ReaderGroup
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.editions.planning")
RECENT_WINDOW = 500  # newest reports a first digest may be topped up from


@dataclass(frozen=True)
class PlannedRecipient:
    subscriber: Subscriber
    selection: Selection


@dataclass(frozen=True)
class _GroupReader:
    """A reader group as selection sees it (``last_digest_at`` only says whether they had one)."""

    topics: tuple[str, ...]
    last_digest_at: datetime | None
    ledger_seq: int | None


class EditionPlanner:
    """What each reader gets, and the outbox rows and variants that say so."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        renderer: DigestRenderer,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.renderer = renderer
        self.clock = clock
        self.domain = settings.mail.from_address.rsplit("@", 1)[1]

    def plan(
        self,
        subscribers: Sequence[Subscriber] | None = None,
        *,
        as_of: datetime | None = None,
        cadences: Sequence[Cadence] | None = None,
    ) -> list[PlannedRecipient]:
        """What each recipient would get now (for previews); nothing is written."""
        source = (
            list(subscribers)
            if subscribers is not None
            else list(self.store.subscribers.iter_recipients(cadences=cadences))
        )
        marks = [s.ledger_seq for s in source if s.ledger_seq is not None]
        ledger = self.ledger(as_of or self.clock(), lowest=min(marks) if marks else None)
        return [
            PlannedRecipient(s, select_reports(s, ledger, max_reports=self.settings.digest.max_reports))
            for s in source
        ]

    def ledger(self, as_of: datetime, *, lowest: int | None) -> Ledger:
        """The reports settled by ``as_of``: those owed since mark ``lowest``, and the newest ones."""
        horizon = self.store.reports.settled_horizon(
            as_of=as_of, settle=timedelta(seconds=self.settings.reports.settle)
        )
        for report in self.store.reports.misdated_reports(as_of=as_of, upto=horizon):
            log.warning(
                "report %r is dated %s, far after this edition: sent now with the date the feed gives",
                report.title,
                report.published.isoformat(),
            )
        owed = (
            self.store.reports.ledger_reports(after=lowest, upto=horizon)
            if lowest is not None and lowest < horizon
            else []
        )
        recent = self.store.reports.recent_reports(limit=RECENT_WINDOW, upto_seq=horizon)
        return Ledger(horizon, owed, recent)

    def archive_url(self, variant_id: int) -> str:
        return f"{self.settings.site.base_url.rstrip('/')}/archive/{variant_id}"

    def audience(self, *, cadences: Sequence[Cadence] | None, as_of: datetime, edition_id: int = 0) -> int:
        """How many readers an edition planned at ``as_of`` would mail: the count a send is confirmed
        with. Chosen exactly as ``write_outbox`` chooses; nothing is written. ``edition_id`` 0 is no
        edition: readers that an unfinished edition still owes are left out, as planning leaves them.
        """
        _, chosen = self._choose(edition_id=edition_id, as_of=as_of, cadences=cadences)
        return sum(group.readers for group, selection in chosen if selection.reports)

    def check_audience(self, expect: int, *, cadences: Sequence[Cadence] | None, as_of: datetime) -> None:
        """AudienceChanged unless an edition planned at ``as_of`` would mail ``expect`` readers."""
        planned = self.audience(cadences=cadences, as_of=as_of)
        if planned != expect:
            raise AudienceChanged(expect, planned)

    def write_outbox(
        self, edition: Edition, *, cadences: Sequence[Cadence] | None, expect: int | None = None
    ) -> int:
        """Plan: one row per reader with reports, one variant per report set; returns the rows written.

        Call it holding the planning lock. Readers are planned as groups (same topics,
        mark and first-digest standing choose the same reports), and the rows are
        written by the database from the groups' choices (storage/planning.py). Readers
        another edition still owes are left out. Each row records the reader's mark
        once it is sent, and how many reports were carried to the next digest. Readers
        with nothing to get have their mark moved to the horizon at once (they were
        judged, and nothing was for them). Safe to rerun after a crash: readers that
        already have a row are skipped, and existing variants are reused.

        ``expect`` (a send confirmed for that many readers): when the plan mails another number,
        the edition is skipped with the reason and AudienceChanged raised before any row, variant
        or mark is written, so the count confirmed is the count planned or nothing happens.
        """
        ledger, chosen = self._choose(edition_id=edition.id, as_of=edition.as_of, cadences=cadences)
        if expect is not None:
            planned = sum(group.readers for group, selection in chosen if selection.reports)
            if planned != expect:
                refused = AudienceChanged(expect, planned)
                self.store.editions.set_edition_status(
                    edition.id, EditionStatus.SKIPPED, reason=f"refused: {refused.message}", now=self.clock()
                )
                raise refused
        variant_ids = {tuple(v.report_ids): v.id for v in self.store.editions.list_variants(edition.id)}
        choices = []
        for group, selection in chosen:
            if not selection.reports:
                choices.append(GroupChoice(group, None, ledger.horizon))
                continue
            variant_id = variant_ids.get(selection.key)
            if variant_id is None:
                variant_id = variant_ids[selection.key] = self._add_variant(edition, selection.reports)
            choices.append(GroupChoice(group, variant_id, selection.mark, selection.carried))
        return self.store.planning.write_choices(
            choices,
            edition_id=edition.id,
            cadences=cadences,
            horizon=ledger.horizon,
            message_id_affixes=MessageIds(self.domain, edition.id).affixes,
            now=self.clock(),
        )

    def _choose(
        self, *, edition_id: int, as_of: datetime, cadences: Sequence[Cadence] | None
    ) -> tuple[Ledger, list[tuple[ReaderGroup, Selection]]]:
        """The reader groups this edition may plan, each with the reports it would get at ``as_of``."""
        groups = self.store.planning.reader_groups(cadences=cadences, edition_id=edition_id)
        marks = [g.ledger_seq for g in groups if g.ledger_seq is not None]
        ledger = self.ledger(as_of, lowest=min(marks) if marks else None)
        max_reports = self.settings.digest.max_reports
        return ledger, [
            (
                group,
                select_reports(
                    _GroupReader(group.topics, None if group.first else as_of, group.ledger_seq),
                    ledger,
                    max_reports=max_reports,
                ),
            )
            for group in groups
        ]

    def repair_variants(self, edition: Edition) -> None:
        """Render variants a crash left empty (the row is written before its render finishes)."""
        for variant in self.store.editions.list_variants(edition.id):
            if not variant.html:
                reports = self.store.reports.get_reports(variant.report_ids)
                digest = self.renderer.render(reports, archive_url=self.archive_url(variant.id))
                self.store.editions.set_variant_content(
                    variant.id, subject=digest.subject, html=digest.html, text=digest.text
                )

    def _add_variant(self, edition: Edition, reports: Sequence[Report]) -> int:
        variant_id = self.store.editions.add_variant(
            edition_id=edition.id, report_ids=[r.id for r in reports], subject="", html="", text=""
        )
        digest = self.renderer.render(reports, archive_url=self.archive_url(variant_id))
        self.store.editions.set_variant_content(
            variant_id, subject=digest.subject, html=digest.html, text=digest.text
        )
        return variant_id


def cadences_for(schedule: str) -> list[Cadence] | None:
    """The cadences an edition of ``schedule`` mails: daily or weekly readers, or everyone (manual)."""
    if schedule == Cadence.DAILY.value:
        return [Cadence.DAILY]
    if schedule == Cadence.WEEKLY.value:
        return [Cadence.WEEKLY]
    return None
