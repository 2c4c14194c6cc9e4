"""Who gets what: the reports that are new for each reader, decided from the ledger.

Every stored report has a ledger number (``seq``), given in the order the service
first stored it; every reader has a mark. A reader is owed the reports in their
topics (none chosen = every topic) numbered above their mark and up to the
edition's horizon (the newest report that has settled: stored at least
``reports.settle`` before the edition). The publisher's dates order and show the
reports, but never decide whether a report is new, so a report that turns up late
or backdated is still owed.

At most ``digest.max_reports`` go in one digest: the oldest owed first, and the
rest are carried to the next digest (the mark stops at the last report given). A
reader who never had a digest gets, besides what they are owed, the newest earlier
reports in their topics, up to the same limit, so a first digest is never empty
for want of news since signup. Readers with the same topics and mark get the same
selection, computed once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from newsletter.models import Report


class Reader(Protocol):
    """What selection needs to know of a subscriber."""

    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def last_digest_at(self) -> datetime | None: ...

    @property
    def ledger_seq(self) -> int | None: ...


@dataclass(frozen=True)
class Ledger:
    """The reports one planning may give, read once per edition.

    ``owed``: reports above the lowest mark among the readers planned, up to
    ``horizon``, in ledger order. ``recent``: the newest reports up to ``horizon``,
    newest first, for first digests.
    """

    horizon: int
    owed: Sequence[Report]
    recent: Sequence[Report]
    _seqs: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_seqs", [r.seq for r in self.owed])

    def after(self, mark: int) -> Sequence[Report]:
        """The owed reports numbered above ``mark``, in ledger order."""
        return self.owed[bisect_right(self._seqs, mark) :]


@dataclass(frozen=True)
class Selection:
    """What one reader gets, why, and where their mark goes once it is sent."""

    reports: tuple[Report, ...]  # newest first, for display
    reason: str
    mark: int = 0  # the reader's ledger mark once this digest is sent
    carried: int = 0  # owed reports over digest.max_reports, left for the next digest

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.reports)


def wants(subscriber: Reader, report: Report) -> bool:
    """Topic match, case-insensitive; a subscriber without topics wants everything."""
    if not subscriber.topics:
        return True
    chosen = {t.casefold() for t in subscriber.topics}
    return any(t.casefold() in chosen for t in report.topics)


def why_included(subscriber: Reader, report: Report) -> str:
    """One line on why a selected report is in a subscriber's digest."""
    if not subscriber.topics:
        topic = "all topics chosen"
    else:
        chosen = {t.casefold() for t in subscriber.topics}
        matched = [t for t in report.topics if t.casefold() in chosen]
        topic = "topic " + ", ".join(matched)
    mark = subscriber.ledger_seq
    when = (
        "new since the last digest"
        if mark is not None and report.seq > mark
        else "among the newest (first digest)"
    )
    return f"{when}; {topic}"


def select_reports(subscriber: Reader, ledger: Ledger, *, max_reports: int) -> Selection:
    """The reports for one reader from ``ledger``: owed ones oldest first, at most ``max_reports``."""
    wanted = {t.casefold() for t in subscriber.topics}

    def matches(report: Report) -> bool:
        return not wanted or any(t.casefold() in wanted for t in report.topics)

    topics = ", ".join(subscriber.topics) if subscriber.topics else "all topics"
    mark = subscriber.ledger_seq
    if mark is None:
        # Never planned (a bulk import): nothing stored before is theirs to miss.
        chosen = [r for r in ledger.recent if matches(r)][:max_reports]
        return Selection(
            _newest_first(chosen), f"first digest: newest {max_reports} in {topics}", mark=ledger.horizon
        )
    owed = [r for r in ledger.after(mark) if matches(r)]
    carried = max(0, len(owed) - max_reports)
    chosen = owed[:max_reports]
    # Carrying over: the mark stops at the last report given, so the rest stay owed.
    new_mark = chosen[-1].seq if carried else max(mark, ledger.horizon)
    reason = f"stored since the last digest, in {topics}"
    if carried:
        reason += f"; {carried} more carried to the next digest (digest.max_reports is {max_reports})"
    if subscriber.last_digest_at is None and len(chosen) < max_reports:
        have = {r.id for r in chosen}
        earlier = [r for r in ledger.recent if r.seq <= mark and r.id not in have and matches(r)]
        chosen += earlier[: max_reports - len(chosen)]
        reason = f"first digest: what is new since signup, then the newest in {topics}"
    return Selection(_newest_first(chosen), reason, mark=new_mark, carried=carried)


def _newest_first(reports: Sequence[Report]) -> tuple[Report, ...]:
    return tuple(sorted(reports, key=lambda r: (r.published, r.seq), reverse=True))
