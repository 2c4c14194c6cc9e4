"""What every part of the store shares: the engine, the clock, keyset streaming."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StorePart:
    """One entity's queries over the shared engine. Methods commit their own transaction."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    def _stream(self, query: sa.Select[Any], key: sa.Column[Any], *, batch_size: int = 2000) -> Iterator[Any]:
        """Keyset pagination: never holds more than one batch, and no long-lived cursor."""
        last: Any = None
        while True:
            page = query.order_by(key).limit(batch_size)
            if last is not None:
                page = page.where(key > last)
            with self.engine.connect() as conn:
                rows = conn.execute(page).all()
            if not rows:
                return
            yield from rows
            last = getattr(rows[-1], key.name)
