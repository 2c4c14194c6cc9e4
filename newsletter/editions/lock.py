"""Send locks held by the database, so two sends of one schedule never run at once.

A lock is one row of ``send_locks`` (name unique, holder, expiry), written through
``store.locks``: taking it is an INSERT or the takeover of an expired row. A held lock is
renewed by a heartbeat thread, so a send may run for hours while a crashed holder's lock
still expires after ``ttl``. The database, not a file, holds it: every process and host that
shares the database sees it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from newsletter.errors import EditionError
from newsletter.storage.locks import LockStore

log = logging.getLogger("newsletter.editions.lock")
DEFAULT_TTL = 600.0  # seconds; renewed every ttl/3 while held


class SendLockBusy(EditionError):
    """Another send of the same schedule holds the lock."""


def lock_name(schedule: str) -> str:
    return f"schedule:{schedule}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SendLock:
    """One named lock; ``acquire`` / ``release`` or ``with hold_send_lock(...)``.

    ``clock`` gives the time written to the row (tests pass a fake one); the
    heartbeat interval is real time, because it guards a real running send.
    ``host`` names this machine in the holder (``delivery.worker_name``, else the
    host name): only a holder of the same name may be judged dead by its pid.
    """

    def __init__(
        self,
        locks: LockStore,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], datetime] | None = None,
        heartbeat: bool = True,
        host: str | None = None,
    ) -> None:
        self.locks = locks
        self.name = name
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock or _utcnow
        self.host = host or socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free or expired; False if someone else holds it."""
        now = self.clock()
        expires_at = now + self.ttl
        # Take over an expired row first: the WHERE re-checks the expiry under the row
        # lock (PostgreSQL READ COMMITTED) or the write lock (SQLite), so one taker wins.
        if self.locks.take_over(self.name, self.holder, now=now, expires_at=expires_at, expired_before=now):
            self._start_heartbeat()
            return True
        if not self.locks.insert(self.name, self.holder, now=now, expires_at=expires_at):
            return self._take_from_dead_holder(now, expires_at)
        self._start_heartbeat()
        return True

    def _take_from_dead_holder(self, now: datetime, expires_at: datetime) -> bool:
        """A holder on this host whose process is gone (killed mid-send) need not be waited for.

        Without this, 'newsletter send --resume' after a crash would wait out the ttl.
        Holders on other hosts cannot be checked and expire normally.
        """
        held = self.locks.current(self.name)
        if held is None or not _dead_local_holder(held.holder, self.host):
            return False
        taken = self.locks.take_over(
            self.name, self.holder, now=now, expires_at=expires_at, from_holder=held.holder
        )
        if taken:
            log.warning("send lock %s: holder %s is no longer running; taken over", self.name, held.holder)
            self._start_heartbeat()
        return taken

    def acquire(self) -> None:
        """Take the lock or raise SendLockBusy naming the holder."""
        if self.try_acquire():
            return
        held = self.locks.current(self.name)
        who = (
            f"held by {held.holder} since {held.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
            if held
            else "just taken by another process"
        )
        expiry = f"; it expires at {held.expires_at:%H:%M:%S} UTC if its holder died" if held else ""
        schedule = self.name.removeprefix("schedule:")
        raise SendLockBusy(
            f"another send of schedule '{schedule}' is running ({who})",
            hint=f"Wait for it to finish ('newsletter editions' shows it){expiry}.",
        )

    def renew(self) -> bool:
        """Push the expiry out; False if the lock was lost (expired and taken over)."""
        return self.locks.renew(self.name, self.holder, expires_at=self.clock() + self.ttl)

    def release(self) -> None:
        """Give the lock up (only if we still hold it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.locks.release(self.name, self.holder)

    def _start_heartbeat(self) -> None:
        if not self._heartbeat:
            return
        self._stop.clear()
        interval = max(self.ttl.total_seconds() / 3, 1.0)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    if not self.renew():
                        log.error(
                            "send lock %s was lost (expired and taken over by another process)", self.name
                        )
                        return
                except Exception:  # a database hiccup must not kill the send; the next beat retries
                    log.exception("renewing send lock %s failed", self.name)

        self._thread = threading.Thread(target=beat, name=f"lock-{self.name}", daemon=True)
        self._thread.start()


def _dead_local_holder(holder: str, here: str) -> bool:
    """A holder named ``here`` (this machine) whose process has ended."""
    parts = holder.rsplit(":", 2)  # name:pid:nonce, read from the right (a name may hold ':')
    if len(parts) != 3:
        return False
    host, pid_text, _ = parts
    if host != here or not pid_text.isdigit():
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


PLANNING_LOCK = "planning"
PLANNING_WAIT = 900.0  # seconds: planning a million readers takes about a minute


@contextmanager
def hold_planning_lock(
    locks: LockStore,
    *,
    clock: Callable[[], datetime] | None = None,
    wait: float = PLANNING_WAIT,
    host: str | None = None,
) -> Iterator[SendLock]:
    """Hold the one planning lock for the block, waiting for another planning to end.

    Editions of different schedules may send side by side, but they plan one at a
    time: a plan reads which readers another edition still owes, and two plans at
    once could each miss the other's rows and give one reader the same reports twice.
    """
    lock = SendLock(locks, PLANNING_LOCK, clock=clock, host=host)
    deadline = time.monotonic() + wait
    while not lock.try_acquire():
        if time.monotonic() > deadline:
            lock.acquire()  # raises SendLockBusy naming the holder
        time.sleep(0.1)
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def hold_send_lock(
    locks: LockStore,
    schedule: str,
    *,
    ttl: float = DEFAULT_TTL,
    clock: Callable[[], datetime] | None = None,
    host: str | None = None,
) -> Iterator[SendLock]:
    """Hold the lock of ``schedule`` for the block; SendLockBusy if another send has it."""
    lock = SendLock(locks, lock_name(schedule), ttl=ttl, clock=clock, host=host)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
