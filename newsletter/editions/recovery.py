"""Recovery: what a dead sender of this machine left behind, settled before anyone sends again.

A sender killed mid-send leaves rows 'sending' under its name and a send journal
(``delivery.journal_dir``) of the results it had heard. ``SenderRecovery`` records
the journaled results and gives the other rows back to pending, fenced on the dead
holder. Only senders of this machine (``host``) whose process is gone are judged
dead here; another machine's rows come back when their lease runs out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from newsletter.config import Settings
from newsletter.delivery.journal import journal_files, journal_owner, journals_in, replay
from newsletter.delivery.suppression import Suppressor
from newsletter.editions.lock import SendLock
from newsletter.models import DeliveryOutcome, DeliveryState, Edition, EditionStatus
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.editions.recovery")


class SenderRecovery:
    """Settles the rows and journals of dead senders on this machine (``host``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        host: str,
        clock: Callable[[], datetime],
        suppressor: Callable[[], Suppressor],
    ) -> None:
        self.settings = settings
        self.store = store
        self.host = host
        self.clock = clock
        self.suppressor = suppressor

    def recover_dead_senders(self) -> None:
        """Recover every edition a dead sender of this machine left rows in, or a journal file in
        ``delivery.journal_dir`` (a worker does this each time it looks for work).

        ``drain`` recovers only an edition it can claim rows of: rows a sender killed here held
        stayed 'sending' until their lease ran out, and the journal of a sender killed after
        another machine finished its edition was never read nor removed.
        """
        host = self.host
        ids = {
            edition_id
            for edition_id, holder in self.store.outbox.sending_holders()
            if dead_here(holder, host)
        }
        for path in journals_in(Path(self.settings.delivery.journal_dir)):
            owner = journal_owner(path)
            if owner is not None and not alive(owner[1]):
                ids.add(owner[0])
        for edition_id in sorted(ids):
            edition = self.store.editions.get_edition(edition_id)
            if edition is not None:
                self.recover(edition)

    def requeue_unknown(self, edition: Edition | None) -> tuple[Edition | None, int]:
        """`send --resume --retry-unknown`: the rows whose outcome was unknown in the newest edition
        that has any go back to pending (same Message-ID), and that edition is sending again.
        Returns it and how many rows were requeued; (``edition``, 0) when no edition has any."""
        with_unknown = [
            e
            for e in self.store.editions.list_editions(limit=50)
            if e.counts.get(DeliveryState.UNKNOWN.value)
        ]
        if not with_unknown:
            return edition, 0
        found = with_unknown[0]
        requeued = self.store.outbox.requeue_unknown(found.id)
        # The edition had ended; its unknown rows make it unfinished again.
        self.store.editions.set_edition_status(
            found.id,
            EditionStatus.SENDING,
            reason=f"{requeued} unknown rows requeued by an operator",
            now=self.clock(),
        )
        return self.store.editions.get_edition(found.id), requeued

    def recover(self, edition: Edition) -> None:
        """Rows a dead sender on this machine left 'sending' get their journaled result,
        or go back to pending.

        Rows whose data was sent without a recorded reply are sent again with the
        same Message-ID (at most one per connection that was open at the crash).
        Rows held by a live sender, or by one on another machine, are left alone:
        the other machine's rows come back when their lease runs out. One recovery
        at a time per edition (a database lock): two at once would each requeue rows
        the other had just handed out again. Every write is fenced on the dead holder,
        so a row someone else took meanwhile is not touched.
        """
        lock = SendLock(
            self.store.locks, f"recover:{edition.id}", clock=self.clock, heartbeat=False, host=self.host
        )
        if not lock.try_acquire():
            log.info("edition %s: another process is recovering it; not recovering here", edition.key)
            return
        try:
            self._recover_held(edition)
        finally:
            lock.release()

    def _recover_held(self, edition: Edition) -> None:
        directory = Path(self.settings.delivery.journal_dir)
        host = self.host
        dead: dict[int, tuple[int, str]] = {}  # row id -> (subscriber id, holder)
        for row_id, subscriber_id, claimed_by in self.store.outbox.sending_rows(edition.id):
            if dead_here(claimed_by, host):
                dead[row_id] = (subscriber_id, claimed_by)
        paths = [p for p in journal_files(directory, edition.id) if not alive(_journal_pid(p))]
        entries = replay(paths)
        outcomes: dict[str, list[DeliveryOutcome]] = {}
        retry: dict[str, list[int]] = {}
        for row_id in sorted(dead):
            subscriber_id, holder = dead[row_id]
            entry = entries.get(row_id)
            if (
                entry is not None
                and entry.state is not None
                and entry.state not in (DeliveryState.DEFERRED, DeliveryState.PENDING)
            ):
                outcomes.setdefault(holder, []).append(
                    DeliveryOutcome(
                        row_id,
                        subscriber_id,
                        entry.state,
                        entry.code,
                        entry.reply or "recovered from the send journal",
                    )
                )
            else:
                retry.setdefault(holder, []).append(row_id)
        recorded = requeued = 0
        for holder, found in outcomes.items():
            written = self.store.outbox.record_outcomes(found, as_of=edition.as_of, holder=holder)
            self.suppressor().record_failures([o for o in found if o.delivery_id in written])
            recorded += len(written)
        for holder, ids in retry.items():
            requeued += self.store.outbox.give_back(
                ids, holder=holder, reply="requeued after an interrupted send"
            )
        if dead or paths:
            log.info(
                "recovered edition %s: %d results from journals, %d rows requeued",
                edition.key,
                recorded,
                requeued,
            )
        for path in paths:
            path.unlink(missing_ok=True)


def dead_here(claimed_by: str, host: str) -> bool:
    """No holder, or a sender of this machine (``host``) whose process is gone."""
    owner_host, _, pid = claimed_by.rpartition(":")
    return not claimed_by or (owner_host == host and pid.isdigit() and not alive(int(pid)))


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (this process always does)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _journal_pid(path: Path) -> int:
    owner = journal_owner(path)
    return owner[1] if owner else -1
