"""Feed validators kept between fetches, so a scheduled fire makes a conditional GET.

One row per feed source in ``feed_state`` (ETag, Last-Modified, when fetched). A
``304 Not Modified`` stores nothing new and keeps the validators; a failed fetch
keeps them too, so the next fire asks the same question again.
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.content.feed import FeedValidators, load_reports
from newsletter.storage.store import Store, UTCDateTime, metadata

_created: "weakref.WeakSet[Engine]" = weakref.WeakSet()  # engines whose table is known to exist

feed_state = sa.Table(
    "feed_state",
    metadata,
    sa.Column("source", sa.String(2000), primary_key=True),
    sa.Column("etag", sa.String(500)),
    sa.Column("modified", sa.String(100)),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
)
# The daily and weekly fires of a Monday refresh together; Store.upsert_reports reads
# then inserts, so two concurrent upserts of one new report collide. Serialise them in
# the process, and retry the rare collision with another process (the retry sees the row).
_refreshing = threading.Lock()
UPSERT_ATTEMPTS = 3


def ensure_feed_state_table(engine: Engine) -> None:
    """Create ``feed_state`` if missing (idempotent, safe when processes race to create it)."""
    if engine in _created:
        return
    try:
        metadata.create_all(engine, tables=[feed_state])
    except sa.exc.DatabaseError:
        # Another process created it between the existence check and our CREATE TABLE.
        if not sa.inspect(engine).has_table("feed_state"):
            raise
    _created.add(engine)


def load_validators(engine: Engine, source: str) -> FeedValidators | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(feed_state).where(feed_state.c.source == source)).first()
    return FeedValidators(row.etag, row.modified) if row else None


def save_validators(engine: Engine, source: str, validators: FeedValidators, *, now: datetime) -> None:
    values = {"etag": validators.etag, "modified": validators.modified, "fetched_at": now}
    with engine.begin() as conn:
        if conn.execute(feed_state.update().where(feed_state.c.source == source).values(**values)).rowcount == 0:
            conn.execute(feed_state.insert().values(source=source, **values))


def refresh_feed(settings: Settings, store: Store, *, now: datetime) -> tuple[int, int, bool]:
    """Fetch the feed (conditionally) and store its reports: (added, updated, not_modified).

    Raises FeedError (nothing stored, validators unchanged) when the feed is down or broken.
    """
    source = settings.reports.feed
    ensure_feed_state_table(store.engine)
    result = load_reports(
        source, timeout=settings.reports.timeout, teaser_length=settings.reports.teaser_length, validators=load_validators(store.engine, source)
    )
    if result.not_modified:
        save_validators(store.engine, source, result.validators, now=now)
        return 0, 0, True
    for attempt in range(1, UPSERT_ATTEMPTS + 1):
        try:
            with _refreshing:
                added, updated = store.upsert_reports(result.reports, now=now)
            break
        except IntegrityError:
            if attempt == UPSERT_ATTEMPTS:
                raise
    save_validators(store.engine, source, result.validators, now=now)
    return added, updated, False
