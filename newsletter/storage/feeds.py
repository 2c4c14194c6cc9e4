"""Feed validators (ETag, Last-Modified) kept between fetches, one row per feed source."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from newsletter.models import FeedValidators
from newsletter.storage.part import StorePart
from newsletter.storage.schema import feed_state


class FeedStateStore(StorePart):
    """What the last fetch of each feed source answered, for the next conditional GET."""

    def load_validators(self, source: str) -> FeedValidators | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(feed_state).where(feed_state.c.source == source)).first()
        return FeedValidators(row.etag, row.modified) if row else None

    def save_validators(self, source: str, validators: FeedValidators, *, now: datetime) -> None:
        values = {"etag": validators.etag, "modified": validators.modified, "fetched_at": now}
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    feed_state.update().where(feed_state.c.source == source).values(**values)
                ).rowcount
                == 0
            ):
                conn.execute(feed_state.insert().values(source=source, **values))
