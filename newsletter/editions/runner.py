"""Editions: the one path every send takes (operator CLI and scheduler alike).

``EditionRunner.run`` claims an edition key (unique in the database), fetches
the feed, plans who gets which reports, renders each variant once, writes one
outbox row per recipient, and drains the outbox. Progress is recorded only
after it happened, so running the same key again resumes instead of resending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from newsletter.config import Settings
from newsletter.content.feed_state import refresh_feed
from newsletter.content.render import DigestRenderer
from newsletter.delivery.message import edition_message
from newsletter.delivery.sender import Sender, worker_host
from newsletter.delivery.suppression import Suppressor
from newsletter.editions import pausing
from newsletter.editions.lock import SendLock, SendLockBusy, hold_planning_lock, hold_send_lock
from newsletter.editions.planning import EditionPlanner, PlannedRecipient, cadences_for
from newsletter.editions.recovery import SenderRecovery
from newsletter.errors import EditionError, FeedError, NewsletterError
from newsletter.models import Cadence, DeliveryOutcome, DeliveryState, Edition, EditionStatus, Subscriber
from newsletter.storage.store import Store
from newsletter.tokens import TokenSigner

log = logging.getLogger("newsletter.editions.runner")
ENDED = (EditionStatus.SENT, EditionStatus.SKIPPED, EditionStatus.FAILED)


@dataclass(frozen=True)
class EditionResult:
    edition: Edition
    created: bool  # False: the key existed (a rerun or a resume)
    tally: dict[str, int] = field(default_factory=dict)  # rows per state reached in this run
    message: str = ""


class EditionRunner:
    """The edition engine: the one way editions start, resume, drain and finish.

    CLI ``send`` and ``send --resume``, ``worker``, the scheduler's fires and its
    upkeep all come here. The engine takes the schedule's send lock, makes the one
    conditional feed fetch, plans under the planning lock, sends, and records why
    an edition failed or paused. Built at the edge, passed down.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: TokenSigner,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.clock = clock or (lambda: datetime.now(UTC))
        self.renderer = DigestRenderer(settings)
        # This machine's name in every lock it holds, as in the rows it claims: two machines
        # sharing a host name (containers) must never judge each other's holders by local pids.
        self.host = worker_host(settings.delivery.worker_name)
        self.planner = EditionPlanner(settings, store, self.renderer, clock=lambda: self.clock())
        self.recovery = SenderRecovery(
            settings, store, host=self.host, clock=lambda: self.clock(), suppressor=self.suppressor
        )

    # -- feed ---------------------------------------------------------------------

    def ingest(self) -> tuple[int, int]:
        """Fetch the feed (conditionally) and store its reports; FeedError (nothing stored) if it fails."""
        added, updated, not_modified = refresh_feed(self.settings, self.store, now=self.clock())
        log.info("feed: %s", "not modified" if not_modified else f"{added} new and {updated} changed reports")
        return added, updated

    # -- planning and recovery (planning.py, recovery.py) ----------------------------

    def plan(
        self,
        subscribers: Sequence[Subscriber] | None = None,
        *,
        as_of: datetime | None = None,
        cadences: Sequence[Cadence] | None = None,
    ) -> list[PlannedRecipient]:
        """What each recipient would get now (for previews); nothing is written."""
        return self.planner.plan(subscribers, as_of=as_of, cadences=cadences)

    def recover_dead_senders(self) -> None:
        """Settle every edition a dead sender of this machine left rows or a journal in."""
        self.recovery.recover_dead_senders()

    def suppressor(self) -> Suppressor:
        return Suppressor(self.settings, self.store.subscribers, self.store.bounces, clock=self.clock)

    # -- the entry points ------------------------------------------------------------

    def send_lock(self, schedule: str) -> AbstractContextManager[SendLock]:
        """Hold ``schedule``'s send lock for the block, named after this machine; SendLockBusy if taken."""
        return hold_send_lock(self.store.locks, schedule, clock=self.clock, host=self.host)

    def run(
        self,
        *,
        key: str,
        schedule: str = "manual",
        cadences: Sequence[Cadence] | None = None,
        as_of: datetime | None = None,
        fetch: bool = True,
        send: bool = True,
        expect: int | None = None,
        on_planned: Callable[[int], None] | None = None,
        on_outcome: Callable[[DeliveryOutcome], None] | None = None,
    ) -> EditionResult:
        """Run the edition ``key`` to the end, or resume it if it exists unfinished.

        Holds the schedule's send lock throughout (SendLockBusy if another send of the
        schedule runs). A finished edition (sent, skipped, failed) is not run again. A
        feed that cannot be fetched fails the edition with the reason and sends nothing.
        ``send=False`` stops after planning: the outbox is written and the edition is
        left "sending" for `newsletter worker` processes to drain. ``expect``: the reader count
        the send was confirmed with; a plan of another count is AudienceChanged, nothing written.
        """
        as_of = as_of or self.clock()
        existing = self.store.editions.find_edition(key)
        if existing is not None and existing.status in ENDED:
            return EditionResult(
                existing,
                False,
                message=f"edition {key} already ended ({existing.status.value}); nothing sent",
            )
        with self.send_lock(schedule):
            if expect is not None and existing is None:
                # Compared before the edition exists too, so a refusal leaves nothing behind.
                if fetch:
                    self.ingest()  # the edition's one read of the feed: not read again below
                    fetch = False
                self.planner.check_audience(expect, cadences=cadences, as_of=as_of)
            edition, created = self.store.editions.create_edition(
                key=key, schedule=schedule, as_of=as_of, now=self.clock()
            )
            if not created:
                if edition.status in ENDED:
                    return EditionResult(
                        edition,
                        False,
                        message=f"edition {key} already ended ({edition.status.value}); nothing sent",
                    )
                if not send:
                    return EditionResult(
                        edition,
                        False,
                        message=f"edition {key} already exists ({edition.status.value}); nothing planned",
                    )
                if edition.status is EditionStatus.PAUSED:
                    # Only an operator's resume takes a paused edition up
                    # (a scheduled fire of its slot does not).
                    return EditionResult(
                        edition,
                        False,
                        message=f"edition {key} is paused ({edition.reason}); nothing sent:"
                        f" 'newsletter resume {key}' resumes it",
                    )
                with pausing.stop_pauses(self.store, edition, clock=self.clock):
                    return self._resume_held(edition, on_planned=on_planned, on_outcome=on_outcome)
            log.info("edition %s (%s) started", key, schedule)
            with pausing.stop_pauses(self.store, edition, clock=self.clock):
                if fetch:
                    self._fetch_for(edition)
                return self._plan_and_send(
                    edition,
                    cadences=cadences,
                    on_planned=on_planned,
                    on_outcome=on_outcome,
                    created=True,
                    send=send,
                    expect=expect,
                )

    def resume(
        self,
        edition: Edition | None = None,
        *,
        retry_unknown: bool = False,
        by: str = "an operator",
        client: str = "",
        on_start: Callable[[Edition, int], None] | None = None,
        on_planned: Callable[[int], None] | None = None,
        on_outcome: Callable[[DeliveryOutcome], None] | None = None,
    ) -> EditionResult | None:
        """An operator's resume: finish an unfinished edition (default: the newest one), paused
        ones included, under its schedule's lock. The pause's reason is cleared and the resume
        written to the audit log (``by``, ``client``); a ctrl-C or SIGTERM pauses it again.

        ``retry_unknown`` first puts the rows whose outcome was unknown back to pending
        (same Message-ID), in the newest edition that has any. ``on_start`` hears which
        edition is resumed and how many unknown rows were requeued. None: nothing to resume.
        """
        requeued = 0
        if retry_unknown:
            edition, requeued = self.recovery.requeue_unknown(edition)
        if edition is None:
            unfinished = self.store.editions.list_editions(
                statuses=[EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED], limit=1
            )
            if not unfinished:
                return None
            edition = unfinished[0]
        if edition.status in (EditionStatus.SENT, EditionStatus.SKIPPED):
            raise EditionError(
                f"edition {edition.key} already ended ({edition.status.value})",
                hint="Start a new edition with 'newsletter send'.",
            )
        with self.send_lock(edition.schedule):
            edition = self._reload(edition)
            if on_start is not None:
                on_start(edition, requeued)
            edition = pausing.unpause(self.store, edition, by=by, client=client, now=self.clock())
            with pausing.stop_pauses(self.store, edition, clock=self.clock):
                return self._resume_held(edition, on_planned=on_planned, on_outcome=on_outcome)

    def pause(self, edition: Edition, *, by: str, reason: str = "", client: str = "") -> Edition:
        """Pause ``edition``: the one pause, for the console, the API, `newsletter pause` and a
        stopped `newsletter send`. Every sender of it (`newsletter send`, the scheduler, a console
        thread, workers) looks at the status before each batch it claims: it stops there, lets
        its messages in flight finish and gives its unsent rows back. Nothing takes a paused
        edition up again (upkeep, a scheduled fire) until an operator's ``resume``.

        The reason is ``reason`` (default "paused by BY") with the time; it goes to the audit
        log with ``by``. EditionError unless the edition is planned or sending.
        """
        return pausing.pause(self.store, edition, by=by, reason=reason, client=client, now=self.clock())

    def drain(
        self, edition: Edition, *, on_outcome: Callable[[DeliveryOutcome], None] | None = None
    ) -> EditionResult:
        """Help send an edition that is already planned (the `newsletter worker` path).

        Takes no schedule lock: several workers drain one edition side by side, each
        claiming its own rows. An edition not yet planned is left to its sender.
        """
        self.recovery.recover(edition)
        if edition.status is EditionStatus.PLANNED:
            return EditionResult(edition, False, message="not planned yet; its sender plans it")
        return self._plan_and_send(
            edition, cadences=None, on_planned=None, on_outcome=on_outcome, created=False
        )

    def upkeep(self) -> list[str]:
        """Resume every edition a crash left unfinished, and every edition whose deferred rows are due.

        The scheduler runs it at start and every few minutes. An edition whose
        schedule lock another live send holds is left to that send. Paused editions
        wait for an operator: the circuit breaker stopped them for a reason.
        """
        done: list[str] = []
        for edition in self.store.editions.list_editions(
            statuses=[EditionStatus.PLANNED, EditionStatus.SENDING], limit=20
        ):
            counts = edition.counts
            due = self.store.outbox.next_due(edition.id)
            stuck = (
                edition.status is EditionStatus.PLANNED
                or counts.get("pending", 0)
                or counts.get("sending", 0)
            )
            if not stuck and (due is None or due > self.clock()):
                continue
            try:
                with self.send_lock(edition.schedule):
                    fresh = self._reload(edition)
                    if fresh.status not in (EditionStatus.PLANNED, EditionStatus.SENDING):
                        continue
                    result = self._resume_held(fresh)
            except SendLockBusy:
                continue
            except NewsletterError as exc:
                log.warning("could not resume edition %s: %s", edition.key, exc.message)
                continue
            log.info("resumed edition %s: %s", edition.key, result.message)
            done.append(edition.key)
        return done

    # -- inside the lock ---------------------------------------------------------------

    def _fetch_for(self, edition: Edition) -> None:
        """The edition's one feed fetch; a failure fails the edition with the reason."""
        try:
            self.ingest()
        except FeedError as exc:
            self.store.editions.set_edition_status(
                edition.id, EditionStatus.FAILED, reason=exc.message, now=self.clock()
            )
            raise

    def _resume_held(
        self,
        edition: Edition,
        *,
        on_planned: Callable[[int], None] | None = None,
        on_outcome: Callable[[DeliveryOutcome], None] | None = None,
    ) -> EditionResult:
        log.info("resuming edition %s (%s)", edition.key, edition.status.value)
        self.recovery.recover(edition)
        if edition.status is EditionStatus.PLANNED and not self.store.editions.delivery_counts(edition.id):
            # Killed before planning wrote anything, maybe before the feed was stored: fetch it now,
            # or the edition would be planned from stale (or no) reports.
            self._fetch_for(edition)
        cadences = cadences_for(edition.schedule)
        return self._plan_and_send(
            edition, cadences=cadences, on_planned=on_planned, on_outcome=on_outcome, created=False
        )

    def _plan_and_send(
        self,
        edition: Edition,
        *,
        cadences: Sequence[Cadence] | None,
        on_planned: Callable[[int], None] | None,
        on_outcome: Callable[[DeliveryOutcome], None] | None,
        created: bool,
        send: bool = True,
        expect: int | None = None,
    ) -> EditionResult:
        """Plan the edition if it is not yet, then send what it owes. An edition paused or ended
        since it was read (by an operator, during its planning too) is left as it is: only an
        operator's ``resume`` takes a paused edition up again."""
        note = ""
        if edition.status is EditionStatus.PLANNED:
            with hold_planning_lock(self.store.locks, clock=self.clock, host=self.host):
                total = self.planner.write_outbox(edition, cadences=cadences, expect=expect)
                waiting = self.store.subscribers.count_waiting(cadences=cadences, outside_edition=edition.id)
            if waiting:
                # Kept as the edition's reason, so `newsletter editions ID` says who is not in it and why.
                note = f"{waiting} readers left out: an unfinished edition still owes them its reports"
                log.warning("edition %s: %s", edition.key, note)
            if total == 0 and not self.store.editions.delivery_counts(edition.id):
                reason = "no new reports for any subscriber" + (
                    f" ({waiting} readers wait for an unfinished edition)" if waiting else ""
                )
                self.store.editions.set_edition_status(
                    edition.id, EditionStatus.SKIPPED, reason=reason, now=self.clock()
                )
                log.info("edition %s skipped: %s", edition.key, reason)
                return EditionResult(self._reload(edition), created, message=f"skipped: {reason}")
        if on_planned is not None:
            on_planned(
                sum(
                    n
                    for s, n in self.store.editions.delivery_counts(edition.id).items()
                    if s in ("pending", "deferred")
                )
            )
        going_on = (EditionStatus.PLANNED, EditionStatus.SENDING)
        if not self.store.editions.set_edition_status(
            edition.id, EditionStatus.SENDING, reason=note, now=self.clock(), only_from=going_on
        ):
            fresh = self._reload(edition)
            return EditionResult(
                fresh, created, message=f"edition {edition.key} is {fresh.status.value} now; nothing sent"
            )
        self.planner.repair_variants(edition)
        if not send:
            planned = self.store.editions.delivery_counts(edition.id).get(DeliveryState.PENDING.value, 0)
            return EditionResult(
                self._reload(edition),
                created,
                message=f"planned {planned} rows; 'newsletter worker' sends them",
            )
        prepared = {  # the one builder of a digest's message (a test send's too)
            v.id: edition_message(
                self.settings.mail, subject=v.subject, text=v.text, html=v.html, edition_key=edition.key
            )
            for v in self.store.editions.list_variants(edition.id)
        }
        sender = Sender(
            self.settings,
            self.store.outbox,
            self.store.subscribers,
            self.signer,
            self.suppressor(),
            edition_id=edition.id,
            as_of=edition.as_of,
            prepared=prepared,
            give_up_after=edition.created_at + timedelta(seconds=self.settings.delivery.max_age),
            on_outcome=on_outcome,
            clock=self.clock,
            halted=lambda: pausing.halted(self.store, edition.key),
        )
        tally = sender.run()
        if sender.halted_reason:
            log.info("edition %s: %s", edition.key, sender.halted_reason)
            return EditionResult(self._reload(edition), created, tally, sender.halted_reason)
        return self._finish(edition, tally, created, paused_reason=sender.paused_reason)

    def _finish(
        self, edition: Edition, tally: dict[str, int], created: bool, *, paused_reason: str = ""
    ) -> EditionResult:
        counts = self.store.editions.delivery_counts(edition.id)
        deferred = counts.get(DeliveryState.DEFERRED.value, 0)
        others = counts.get(DeliveryState.PENDING.value, 0) + counts.get(DeliveryState.SENDING.value, 0)
        if paused_reason:
            # The breaker or a refusal of our own side: the same pause as an operator's, audited.
            try:
                pausing.pause(
                    self.store, edition, by="the sender", reason=paused_reason, client="", now=self.clock()
                )
            except EditionError:
                pass  # an operator paused it meanwhile: their reason stays
            message = self._reload(edition).reason
        elif others:
            # Other senders (workers) still hold rows of this edition; the last one to finish closes it.
            message = f"{others} rows still with other senders"
        elif deferred:
            due = self.store.outbox.next_due(edition.id)
            reason = (
                f"{deferred} deferred; next attempt after {due:%Y-%m-%d %H:%M} UTC;"
                " run 'newsletter send --resume'"
            )
            # Fenced like every status a sender writes: a pause that came after its last batch stays.
            self.store.editions.set_edition_status(
                edition.id,
                EditionStatus.SENDING,
                reason=reason,
                now=self.clock(),
                only_from=[EditionStatus.SENDING],
            )
            message = reason
        elif self.store.editions.set_edition_status(
            edition.id, EditionStatus.SENT, now=self.clock(), only_from=[EditionStatus.SENDING]
        ):
            message = "finished"
        else:
            message = f"every row is done, but the edition is {self._reload(edition).status.value} now"
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        log.info("edition %s: %s (%s)", edition.key, message, summary)
        return EditionResult(self._reload(edition), created, tally, message)

    def _reload(self, edition: Edition) -> Edition:
        fresh = self.store.editions.get_edition(edition.id)
        assert fresh is not None
        return fresh
