"""Send locks held by the database, so two sends of one schedule never run at once.

A lock is one row of ``send_locks`` (name unique, holder, expiry). Taking it is an
INSERT (the primary key makes it atomic on SQLite and PostgreSQL) or the takeover
of an expired row by a guarded UPDATE. A held lock is renewed by a heartbeat
thread, so a send may run for hours while a crashed holder's lock still expires
after ``ttl``. The database, not a file, holds it: every process and host that
shares the database sees it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from newsletter.errors import EditionError
from newsletter.storage.store import UTCDateTime, metadata

log = logging.getLogger("newsletter.editions.lock")
DEFAULT_TTL = 600.0  # seconds; renewed every ttl/3 while held

_created: "weakref.WeakSet[Engine]" = weakref.WeakSet()  # engines whose table is known to exist

send_locks = sa.Table(
    "send_locks",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)


class SendLockBusy(EditionError):
    """Another send of the same schedule holds the lock."""


@dataclass(frozen=True)
class LockInfo:
    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


def lock_name(schedule: str) -> str:
    return f"schedule:{schedule}"


def ensure_lock_table(engine: Engine) -> None:
    """Create ``send_locks`` if missing (idempotent, safe when processes race to create it)."""
    if engine in _created:
        return
    try:
        metadata.create_all(engine, tables=[send_locks])
    except sa.exc.DatabaseError:
        # Another process created it between the existence check and our CREATE TABLE.
        if not sa.inspect(engine).has_table("send_locks"):
            raise
    _created.add(engine)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def current_lock(engine: Engine, name: str) -> LockInfo | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(send_locks).where(send_locks.c.name == name)).first()
    return LockInfo(row.name, row.holder, row.acquired_at, row.expires_at) if row else None


class SendLock:
    """One named lock; ``acquire`` / ``release`` or ``with hold_send_lock(...)``.

    ``clock`` gives the time written to the row (tests pass a fake one); the
    heartbeat interval is real time, because it guards a real running send.
    """

    def __init__(self, engine: Engine, name: str, *, ttl: float = DEFAULT_TTL, clock: Callable[[], datetime] | None = None, heartbeat: bool = True) -> None:
        self.engine = engine
        self.name = name
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock or _utcnow
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free or expired; False if someone else holds it."""
        now = self.clock()
        values = {"holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}
        # Take over an expired row first: the WHERE re-checks the expiry under the row
        # lock (PostgreSQL READ COMMITTED) or the write lock (SQLite), so one taker wins.
        with self.engine.begin() as conn:
            taken = conn.execute(
                send_locks.update().where(send_locks.c.name == self.name, send_locks.c.expires_at < now).values(**values)
            ).rowcount
        if taken == 1:
            self._start_heartbeat()
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(send_locks.insert().values(name=self.name, **values))
        except IntegrityError:
            return self._take_from_dead_holder(values)
        self._start_heartbeat()
        return True

    def _take_from_dead_holder(self, values: dict[str, object]) -> bool:
        """A holder on this host whose process is gone (killed mid-send) need not be waited for.

        Without this, 'newsletter send --resume' after a crash would wait out the ttl.
        Holders on other hosts cannot be checked and expire normally.
        """
        held = current_lock(self.engine, self.name)
        if held is None or not _dead_local_holder(held.holder):
            return False
        with self.engine.begin() as conn:
            taken = conn.execute(
                send_locks.update().where(send_locks.c.name == self.name, send_locks.c.holder == held.holder).values(**values)
            ).rowcount
        if taken == 1:
            log.warning("send lock %s: holder %s is no longer running; taken over", self.name, held.holder)
            self._start_heartbeat()
        return taken == 1

    def acquire(self) -> None:
        """Take the lock or raise SendLockBusy naming the holder."""
        if self.try_acquire():
            return
        held = current_lock(self.engine, self.name)
        who = f"held by {held.holder} since {held.acquired_at:%Y-%m-%d %H:%M:%S} UTC" if held else "just taken by another process"
        expiry = f"; it expires at {held.expires_at:%H:%M:%S} UTC if its holder died" if held else ""
        schedule = self.name.removeprefix("schedule:")
        raise SendLockBusy(
            f"another send of schedule '{schedule}' is running ({who})",
            hint=f"Wait for it to finish ('newsletter editions' shows it){expiry}.",
        )

    def renew(self) -> bool:
        """Push the expiry out; False if the lock was lost (expired and taken over)."""
        now = self.clock()
        with self.engine.begin() as conn:
            return conn.execute(
                send_locks.update()
                .where(send_locks.c.name == self.name, send_locks.c.holder == self.holder)
                .values(expires_at=now + self.ttl)
            ).rowcount == 1

    def release(self) -> None:
        """Give the lock up (only if we still hold it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.engine.begin() as conn:
            conn.execute(send_locks.delete().where(send_locks.c.name == self.name, send_locks.c.holder == self.holder))

    def _start_heartbeat(self) -> None:
        if not self._heartbeat:
            return
        self._stop.clear()
        interval = max(self.ttl.total_seconds() / 3, 1.0)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    if not self.renew():
                        log.error("send lock %s was lost (expired and taken over by another process)", self.name)
                        return
                except Exception:  # a database hiccup must not kill the send; the next beat retries
                    log.exception("renewing send lock %s failed", self.name)

        self._thread = threading.Thread(target=beat, name=f"lock-{self.name}", daemon=True)
        self._thread.start()


def _dead_local_holder(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # another send in this very process: alive by definition
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False


@contextmanager
def hold_send_lock(engine: Engine, schedule: str, *, ttl: float = DEFAULT_TTL, clock: Callable[[], datetime] | None = None) -> Iterator[SendLock]:
    """Hold the lock of ``schedule`` for the block; SendLockBusy if another send has it."""
    ensure_lock_table(engine)
    lock = SendLock(engine, lock_name(schedule), ttl=ttl, clock=clock)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
