"""The rows one sender holds: their lease, its renewal, and the fencing that guards them.

Every row a sender claims carries its fencing token; results, renewals and give-backs
are written only while a row still carries it (see ``storage.outbox``). ``Leases``
keeps the sender's side of that bargain: which claimed rows still wait for a committed
result, which were taken over by another sender (never sent from here), and until when
the last renewal lets the connections send.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable

from newsletter.storage.outbox import OutboxStore

log = logging.getLogger("newsletter.delivery.sender")
LEASE_SAFETY = 0.8  # send only within this part of a lease after its last renewal


def worker_host(configured: str = "") -> str:
    """This machine's name in claimed_by: ``delivery.worker_name``, else the system's host name."""
    return configured.strip() or socket.gethostname()


def worker_name(configured: str = "") -> str:
    """This process's name in the outbox's claimed_by column: host:pid (see ``worker_host``)."""
    return f"{worker_host(configured)}:{os.getpid()}"


class Leases:
    """The claimed rows of one sender run, under one fencing token; shared by its threads."""

    def __init__(self, outbox: OutboxStore, *, edition_id: int, lease: int, worker: str) -> None:
        self.outbox = outbox
        self.edition_id = edition_id
        self.lease = lease
        self.worker = worker
        self.token = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._outstanding: set[int] = set()  # claimed, result not yet committed
        self._lost: set[int] = set()  # taken over by another sender: never sent from here
        self._deadline = time.monotonic() + lease * LEASE_SAFETY

    def claimed(self, ids: Iterable[int]) -> None:
        """Rows just claimed (the claim itself renewed the lease)."""
        with self._lock:
            self._outstanding.update(ids)
            self._deadline = time.monotonic() + self.lease * LEASE_SAFETY

    def committed(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._outstanding.difference_update(ids)

    def untried(self, answered: set[int]) -> list[int]:
        """Claimed rows without a result yet and not in ``answered``."""
        with self._lock:
            return [i for i in self._outstanding if i not in answered]

    def ends(self) -> float:
        """The monotonic time the rows' lease runs out in the database (no renewal after now)."""
        with self._lock:
            return self._deadline + self.lease * (1 - LEASE_SAFETY)

    def lapsed(self, row_id: int) -> str:
        """Why this row must not be sent now ("" when it may): lost, or the lease not renewed in time."""
        with self._lock:
            if row_id in self._lost:
                return "taken over by another sender: not sent from here"
            if time.monotonic() > self._deadline:
                return "lease not renewed in time: given back, not sent"
        return ""

    def renew(self, stop: threading.Event) -> None:
        """A thread's loop: renew on a timer (a third of the lease) until ``stop``, independent
        of batches and send rate.

        Rows missing from the renewal were taken over by another sender: they are marked
        lost and never sent from here. A renewal that fails leaves the deadline where it
        was, and rows are not sent past it (see ``lapsed``).
        """
        interval = max(self.lease / 3, 0.2)
        while not stop.wait(interval):
            started = time.monotonic()
            try:
                held = self.outbox.renew_lease(
                    self.edition_id, worker=self.worker, lease_seconds=self.lease, token=self.token
                )
            except Exception as exc:  # the database may be restarting: the next beat retries
                log.warning(
                    "edition %s: lease renewal failed (%s); not sending past the lease",
                    self.edition_id,
                    str(exc).splitlines()[0][:200],
                )
                continue
            with self._lock:
                lost = {i for i in self._outstanding if i not in held}
                # Rows whose results are collected but not committed are still held: only
                # queued ones can be lost, and a result already journaled stays as it is.
                self._lost |= lost
                self._deadline = started + self.lease * LEASE_SAFETY
            if lost:
                log.warning(
                    "edition %s: %d rows were taken over by another sender; they will not be sent from here",
                    self.edition_id,
                    len(lost),
                )
