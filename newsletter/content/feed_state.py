"""Feed validators kept between fetches, so a scheduled fire makes a conditional GET.

One row per feed source (``store.feeds``) (ETag, Last-Modified, when fetched). A
``304 Not Modified`` stores nothing new and keeps the validators; a failed fetch
keeps them too, so the next fire asks the same question again.

What the operator should know about a fetch goes to the log: each entry skipped
(and why), and each report dated in the future (held back until its time).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.content.feed import load_reports
from newsletter.models import Report
from newsletter.storage.store import Store

log = logging.getLogger(__name__)

# The daily and weekly fires of a Monday refresh together; Store.upsert_reports reads
# then inserts, so two concurrent upserts of one new report collide. Serialise them in
# the process, and retry the rare collision with another process (the retry sees the row).
_refreshing = threading.Lock()
UPSERT_ATTEMPTS = 3
FUTURE_WINDOW = 200  # newest stored reports looked at for future dates


def refresh_feed(settings: Settings, store: Store, *, now: datetime) -> tuple[int, int, bool]:
    """Fetch the feed (conditionally) and store its reports: (added, updated, not_modified).

    Raises FeedError (nothing stored, validators unchanged) when the feed is down, too
    large, or has no usable entry. Skipped entries and future dates are logged.
    """
    source = settings.reports.feed
    result = load_reports(
        source,
        timeout=settings.reports.timeout,
        teaser_length=settings.reports.teaser_length,
        validators=store.feeds.load_validators(source),
        max_bytes=settings.reports.max_feed_bytes,
        now=now,
    )
    if result.not_modified:
        store.feeds.save_validators(source, result.validators, now=now)
        return 0, 0, True
    for problem in result.skipped:
        log.warning("%s (skipped; the other entries are kept)", problem)
    reports = _keep_first_seen_dates(store, result.reports, result.undated)
    for report in reports:
        if report.published > now:
            log.warning(
                "report %r is dated %s, in the future: it is held back until then",
                report.title,
                report.published.isoformat(),
            )
    for attempt in range(1, UPSERT_ATTEMPTS + 1):
        try:
            with _refreshing:
                added, updated = store.reports.upsert_reports(reports, now=now)
            break
        except IntegrityError:
            if attempt == UPSERT_ATTEMPTS:
                raise
    store.feeds.save_validators(source, result.validators, now=now)
    return added, updated, False


def _keep_first_seen_dates(
    store: Store, reports: tuple[Report, ...], undated: frozenset[str]
) -> list[Report]:
    """Undated entries are dated when first seen: a stored copy keeps that date, so it never moves."""
    if not undated:
        return list(reports)
    stored = {r.id: r.published for r in store.reports.get_reports(sorted(undated))}
    return [dataclasses.replace(r, published=stored[r.id]) if r.id in stored else r for r in reports]


def future_reports(store: Store, *, now: datetime) -> list[Report]:
    """Stored reports dated after ``now`` (newest first): held back until their time."""
    return [r for r in store.reports.recent_reports(limit=FUTURE_WINDOW) if r.published > now]
