"""What every part of the store shares: the engine, the clock, keyset streaming."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StorePart:
    """One entity's queries over the shared engine. Methods commit their own transaction."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    def ids_in(self, column: sa.ColumnElement[Any], ids: Iterable[int]) -> sa.ColumnElement[bool]:
        """``column IN ids``, the ids passed as one bound value whatever their number.

        A plain ``in_`` list makes SQLAlchemy name and process one parameter per id on
        every execution, which cost more than the statement itself at a send's batch of
        500 rows. Here the statement stays one cached form: SQLite reads the ids from a
        JSON array (``json_each``), PostgreSQL from an integer array (``= ANY``).
        """
        if self.engine.dialect.name == "postgresql":
            return column == sa.any_(
                sa.bindparam(None, [int(i) for i in ids], type_=postgresql.ARRAY(sa.BigInteger))
            )
        listed = "[" + ",".join(str(int(i)) for i in ids) + "]"
        return column.in_(
            sa.select(
                sa.func.json_each(sa.bindparam(None, listed, type_=sa.String)).table_valued("value").c.value
            )
        )

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
