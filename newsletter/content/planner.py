"""Who gets what: the reports that are new for each subscriber.

A subscriber's reports are those published after their last delivered digest
(a first digest: the newest ``digest.max_reports``), in their topics (none
chosen = every topic), and published before the edition's settle cut-off.
Subscribers with the same report set share one variant, rendered once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from newsletter.models import Report


class Reader(Protocol):
    """What selection needs to know of a subscriber."""

    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def last_digest_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class Selection:
    """What one subscriber gets and why."""

    reports: tuple[Report, ...]  # newest first
    reason: str

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
    since = subscriber.last_digest_at
    when = "new since the last digest" if since is not None else "among the newest (first digest)"
    return f"{when}; {topic}"


def select_reports(subscriber: Reader, recent: Sequence[Report], *, max_reports: int, cutoff: datetime | None = None) -> Selection:
    """The reports for one subscriber from ``recent`` (newest first).

    ``cutoff``: reports published after it are left for the next edition (settle time).
    At most ``max_reports`` are chosen, newest first.
    """
    since = subscriber.last_digest_at
    chosen: list[Report] = []
    wanted = {t.casefold() for t in subscriber.topics}
    for report in recent:
        if cutoff is not None and report.published > cutoff:
            continue
        if since is not None and report.published <= since:
            break  # newest first: everything after this is older still
        if not wanted or any(t.casefold() in wanted for t in report.topics):
            chosen.append(report)
            if len(chosen) == max_reports:
                break
    topics = ", ".join(subscriber.topics) if subscriber.topics else "all topics"
    if since is None:
        reason = f"first digest: newest {max_reports} in {topics}"
    else:
        reason = f"published after the last digest ({since:%Y-%m-%d %H:%M} UTC) in {topics}"
    return Selection(tuple(chosen), reason)
