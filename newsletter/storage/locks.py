"""Named locks held as rows of ``send_locks``: the SQL under ``newsletter.editions.lock``.

Taking a lock is an INSERT (the primary key makes it atomic on SQLite and
PostgreSQL) or the takeover of a row by a guarded UPDATE whose WHERE re-checks
the condition under the row lock, so exactly one taker wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.storage.part import StorePart
from newsletter.storage.schema import send_locks


@dataclass(frozen=True)
class LockInfo:
    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class LockStore(StorePart):
    """Rows of ``send_locks``: insert, take over, renew, release, read."""

    def insert(self, name: str, holder: str, *, now: datetime, expires_at: datetime) -> bool:
        """Create the lock row; False if it exists (someone holds or held it)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    send_locks.insert().values(
                        name=name, holder=holder, acquired_at=now, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    def take_over(
        self,
        name: str,
        holder: str,
        *,
        now: datetime,
        expires_at: datetime,
        expired_before: datetime | None = None,
        from_holder: str | None = None,
    ) -> bool:
        """Take an existing row that expired before ``expired_before`` or is held by ``from_holder``."""
        condition = (
            send_locks.c.expires_at < expired_before
            if expired_before is not None
            else send_locks.c.holder == from_holder
        )
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    send_locks.update()
                    .where(send_locks.c.name == name, condition)
                    .values(holder=holder, acquired_at=now, expires_at=expires_at)
                ).rowcount
                == 1
            )

    def renew(self, name: str, holder: str, *, expires_at: datetime) -> bool:
        """Push the expiry out; False if ``holder`` no longer holds the lock."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    send_locks.update()
                    .where(send_locks.c.name == name, send_locks.c.holder == holder)
                    .values(expires_at=expires_at)
                ).rowcount
                == 1
            )

    def release(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(send_locks.delete().where(send_locks.c.name == name, send_locks.c.holder == holder))

    def current(self, name: str) -> LockInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(send_locks).where(send_locks.c.name == name)).first()
        return LockInfo(row.name, row.holder, row.acquired_at, row.expires_at) if row else None
