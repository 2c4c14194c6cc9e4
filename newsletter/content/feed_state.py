"""Feed validators kept between fetches, so a scheduled fire makes a conditional GET.

One row per feed source (``store.feeds``) (ETag, Last-Modified, when fetched). A
``304 Not Modified`` stores nothing new and keeps the validators; a failed fetch
keeps them too, so the next fire asks the same question again.
"""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.content.feed import load_reports
from newsletter.storage.store import Store

# The daily and weekly fires of a Monday refresh together; Store.upsert_reports reads
# then inserts, so two concurrent upserts of one new report collide. Serialise them in
# the process, and retry the rare collision with another process (the retry sees the row).
_refreshing = threading.Lock()
UPSERT_ATTEMPTS = 3


def refresh_feed(settings: Settings, store: Store, *, now: datetime) -> tuple[int, int, bool]:
    """Fetch the feed (conditionally) and store its reports: (added, updated, not_modified).

    Raises FeedError (nothing stored, validators unchanged) when the feed is down or broken.
    """
    source = settings.reports.feed
    result = load_reports(
        source, timeout=settings.reports.timeout, teaser_length=settings.reports.teaser_length, validators=store.feeds.load_validators(source)
    )
    if result.not_modified:
        store.feeds.save_validators(source, result.validators, now=now)
        return 0, 0, True
    for attempt in range(1, UPSERT_ATTEMPTS + 1):
        try:
            with _refreshing:
                added, updated = store.reports.upsert_reports(result.reports, now=now)
            break
        except IntegrityError:
            if attempt == UPSERT_ATTEMPTS:
                raise
    store.feeds.save_validators(source, result.validators, now=now)
    return added, updated, False
