"""The one pause: the operator's (console, API, `newsletter pause`), a stopped `newsletter send`'s,
and the look every sender takes at its edition before each batch it claims.

Pausing is one conditional status write (planned or sending -> paused, with the reason and the
time) and an audit entry. Senders are not told: each asks ``halted`` before it claims a batch,
stops there, lets its messages in flight finish and gives its untried rows back through its own
stop path, so a send of any process or machine stops the same way. Resuming is the operator's:
``unpause`` moves the edition back to where it stopped and clears the reason (the audit log keeps
the history of reasons); upkeep and scheduled fires never take a paused edition up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from newsletter.errors import EditionError
from newsletter.models import Edition, EditionStatus
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.editions.pausing")
ACTIVE = (EditionStatus.PLANNED, EditionStatus.SENDING)


def pause(store: Store, edition: Edition, *, by: str, reason: str, client: str, now: datetime) -> Edition:
    """Pause ``edition`` with ``reason`` (default "paused by BY") and the time; audited as ``by``.

    EditionError, naming the status, unless it is planned or sending.
    """
    why = f"{reason or f'paused by {by}'} at {now:%Y-%m-%d %H:%M:%S} UTC"
    if not store.editions.set_edition_status(
        edition.id, EditionStatus.PAUSED, reason=why, now=now, only_from=ACTIVE
    ):
        fresh = _reload(store, edition)
        paused = fresh.status is EditionStatus.PAUSED
        raise EditionError(
            f"edition {edition.key} is {fresh.status.value}"
            + (f" ({fresh.reason})" if paused else "; only a planned or sending edition can be paused"),
            hint=f"'newsletter resume {edition.key}' resumes it."
            if paused
            else "'newsletter editions' shows each edition's status.",
        )
    store.accounts.audit(actor=by, action="edition.pause", target=edition.key, detail=why, client=client)
    log.info("edition %s %s", edition.key, why)
    return _reload(store, edition)


def unpause(store: Store, edition: Edition, *, by: str, client: str, now: datetime) -> Edition:
    """An operator's resume of a paused (or failed) edition: back to planned if it never started
    sending, else to sending, its reason cleared; audited as ``by`` with the reason it had.
    Any other edition is returned as it is."""
    if edition.status not in (EditionStatus.PAUSED, EditionStatus.FAILED):
        return edition
    going = EditionStatus.SENDING if edition.started_at else EditionStatus.PLANNED
    if store.editions.set_edition_status(edition.id, going, reason="", now=now, only_from=[edition.status]):
        store.accounts.audit(
            actor=by, action="edition.resume", target=edition.key, detail=edition.reason, client=client
        )
    return _reload(store, edition)


def halted(store: Store, key: str) -> str:
    """Why a sender must claim no more rows: the edition is no longer sending (paused by an
    operator or a stopped send, or paused or finished by another sender). Empty: go on.
    Asked once a batch: ``find_edition`` reads the one row, without the edition's counts."""
    edition = store.editions.find_edition(key)
    if edition is None or edition.status is EditionStatus.SENDING:
        return ""
    return f"stopped: the edition is {edition.status.value} now" + (
        f" ({edition.reason})" if edition.reason else ""
    )


@contextmanager
def stop_pauses(store: Store, edition: Edition, *, clock: Callable[[], datetime]) -> Iterator[None]:
    """Hold it around a send of this process: a deliberate stop (Ctrl-C; SIGTERM, which `newsletter
    send` raises as ``KeyboardInterrupt("SIGTERM")``) pauses the edition with why and when, while
    its sender still holds the schedule's lock, so upkeep never takes it up: only a crash (SIGKILL)
    leaves an edition 'sending' for upkeep to finish. The sender gave its untried rows back."""
    try:
        yield
    except KeyboardInterrupt as stop:
        how = str(stop) or "Ctrl-C"
        try:
            pause(
                store,
                edition,
                by=f"newsletter send (pid {os.getpid()})",
                reason=f"stopped by {how}",
                client="",
                now=clock(),
            )
        except EditionError:
            pass  # already paused (the breaker, an operator) or ended: its status says why
        raise


def _reload(store: Store, edition: Edition) -> Edition:
    fresh = store.editions.get_edition(edition.id)
    assert fresh is not None
    return fresh
