"""The sender: drains an edition's outbox over N SMTP connections.

The main thread claims due rows in batches, splices each recipient's values
into the variant's prepared bytes, and queues the messages; one thread per
SMTP connection sends; results are journaled at once and committed to the
database in batches. The main thread claims the next batch only once at most
one batch is in flight, and looks at the results on a short timer rather than
waking for each. Rules:

- a 4xx (greylisting, a full mailbox) is not retried within the run: the row goes back
  to the queue, deferred, with its own next attempt from the retry policy
  (``delivery.retry``: ``delivery.backoff`` until ``delivery.max_age``), and its
  connection takes the next row at once; the scheduler's upkeep or ``send --resume``
  sends it when it is due;
- a 5xx fails the row; the run goes on;
- a connection lost after the data was sent makes the row "unknown";
- 421, refused connections, timeouts and connections lost before the data back off
  that connection only (the policy's pause: ``delivery.retry_delay`` doubling, at most
  ``delivery.retry_delay_max``): after a 421 or a refused connect while another
  connection is live, the row is handed to it at once and the refused connection parks
  (the pool shrinks to what the server allows and grows back slowly); otherwise the
  connection tries the row again after the pause, ``smtp.retries`` times, then defers it;
- a refusal of our own side (HELO, MAIL FROM, AUTH, TLS, relay access: a
  *sender problem* in ``delivery.judgement``) fails no row and blames no reader:
  the row goes back to pending and the edition pauses with the reason;
- a burst of policy refusals from one receiving domain (``DomainGuard``) defers
  that domain's remaining rows;
- a subscriber who leaves or bounces during the send is skipped (suppressed);
- when more than ``delivery.breaker_threshold`` of the last
  ``delivery.breaker_window`` attempts failed, the run stops claiming rows and
  reports itself paused (the circuit breaker); a resume continues it.

The connection threads live in ``delivery.connections``, the claimed rows' leases and
fencing in ``delivery.leases``, the breaker in ``delivery.breaker``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime
from functools import partial
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from newsletter.config import Settings
from newsletter.delivery.breaker import Breaker
from newsletter.delivery.connections import Connections, Job
from newsletter.delivery.dnscheck import ready_signer
from newsletter.delivery.journal import Journal
from newsletter.delivery.leases import Leases, worker_host, worker_name
from newsletter.delivery.message import PreparedMessage, envelope_sender
from newsletter.delivery.retry import RetryPolicy
from newsletter.delivery.smtp_client import helo_name
from newsletter.delivery.suppression import DomainGuard, Suppressor
from newsletter.models import Delivery, DeliveryOutcome, DeliveryState
from newsletter.storage.outbox import OutboxStore
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore
from newsletter.tokens import Purpose, TokenSigner

__all__ = ["ProgressCallback", "Sender", "worker_host", "worker_name"]

log = logging.getLogger("newsletter.delivery.sender")
ProgressCallback = Callable[[DeliveryOutcome], None]
RESULTS_POLL = 0.005  # seconds between the main thread's looks at the connections' results


class Sender:
    """Sends the rows of one edition; one Sender per run."""

    def __init__(
        self,
        settings: Settings,
        outbox: OutboxStore,
        subscribers: SubscriberStore,
        signer: TokenSigner,
        suppressor: Suppressor,
        *,
        edition_id: int,
        as_of: datetime,
        prepared: dict[int, PreparedMessage],
        give_up_after: datetime | None = None,
        on_outcome: ProgressCallback | None = None,
        clock: Clock = utcnow,
        halted: Callable[[], str] | None = None,
    ) -> None:
        """``halted`` is asked before each batch is claimed: a non-empty answer (the edition was
        paused or ended by someone else, e.g. an operator in the console while workers drain it)
        stops the run there, its messages in flight finishing, and is kept in ``halted_reason``."""
        self.settings = settings
        self.outbox = outbox
        self.subscribers = subscribers
        self.clock = clock
        self.signer = signer
        self.edition_id = edition_id
        self.as_of = as_of
        self.prepared = prepared
        self.dkim = ready_signer(settings)  # refuses a bad or unpublished DKIM key before any mail goes out
        self.on_outcome = on_outcome
        self.give_up_after = give_up_after
        self.suppressor = suppressor
        self.breaker = Breaker(
            edition_id=edition_id,
            window=settings.delivery.breaker_window,
            threshold=settings.delivery.breaker_threshold,
        )
        self.halted = halted
        self.halted_reason = ""
        self._inactive_checked = clock()
        self._inactive_polled = time.monotonic()
        self.worker = worker_name(settings.delivery.worker_name)
        # Fencing: every row this run claims carries the leases' token; results, renewals and
        # give-backs are written only while a row still carries it.
        self.leases = Leases(outbox, edition_id=edition_id, lease=settings.delivery.lease, worker=self.worker)
        self.token = self.leases.token
        self._last_commit = time.monotonic()
        self.base_url = settings.site.base_url.rstrip("/")
        helo_name(
            settings.smtp
        )  # a 'localhost' greeting towards a remote server is refused before any row is claimed
        # SimpleQueue: put and get in C, a few hundred nanoseconds per message. The jobs queue
        # needs no bound: the main thread claims a batch only when at most one is in flight.
        self._results: queue.SimpleQueue[DeliveryOutcome] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.domains = DomainGuard(suppressor.bounces, now=clock())
        self.policy = RetryPolicy.from_settings(settings)
        self.connections = Connections(
            settings,
            policy=self.policy,
            jobs=self._jobs,
            results=self._results,
            stop=self._stop,
            breaker=self.breaker,
            leases=self.leases,
            domains=self.domains,
            clock=clock,
            give_up_after=give_up_after,
            untried_reply=self._untried_reply,
        )

    @property
    def paused_reason(self) -> str:
        """Why the run paused itself (the breaker, or a refusal of our own side); empty: it did not."""
        return self.breaker.reason

    @property
    def refused_connects(self) -> int:
        """Connects refused while another connection was live (their rows handed back)."""
        return self.connections.refused_connects

    # -- main thread ------------------------------------------------------------

    def run(self) -> dict[str, int]:
        """Send every due row; returns how many rows reached each state in this run."""
        journal = Journal(Path(self.settings.delivery.journal_dir), self.edition_id)
        workers = [
            threading.Thread(target=self.connections.work, args=(journal,), name=f"smtp-{i}", daemon=True)
            for i in range(self.settings.smtp.connections)
        ]
        for worker in workers:
            worker.start()
        renewer = threading.Thread(
            target=self.leases.renew, args=(self._stop,), name="lease-renewal", daemon=True
        )
        renewer.start()
        tally: dict[str, int] = {}
        pending: list[DeliveryOutcome] = []
        clean = False
        try:
            self._send_batches(pending, tally)
            self._commit(pending)
            clean = True
        finally:
            self._stop.set()
            renewer.join(timeout=5)
            self._wind_down(workers, journal, pending, tally, clean=clean)
        return tally

    def _send_batches(self, pending: list[DeliveryOutcome], tally: dict[str, int]) -> None:
        """Claim and queue batches until none is left, the run pauses or is halted; then wait for
        every result (``pending``: not yet committed; ``tally``: rows per state)."""
        in_flight = 0
        batch = self.settings.delivery.batch_size
        while not self.paused_reason:
            # The next batch is claimed once at most a batch is still in flight: the connections
            # never run dry, and claimed rows wait in memory for seconds at most.
            in_flight = self._settle(pending, tally, in_flight, at_most=batch)
            if self.paused_reason:
                break
            if self.halted is not None and (why := self.halted()):
                self.halted_reason = why
                break
            rows = self.outbox.claim_deliveries(
                self.edition_id,
                limit=batch,
                worker=self.worker,
                lease_seconds=self.settings.delivery.lease,
                token=self.token,
            )
            if not rows:
                break
            self.leases.claimed(r.id for r in rows)
            in_flight += self._queue(rows)
        self._settle(pending, tally, in_flight, at_most=0)

    def _queue(self, rows: list[Delivery]) -> int:
        """Hand the connections a job per claimed row, until the run pauses; how many rows were taken."""
        date = format_datetime(self.clock())
        taken = 0
        for row in rows:
            if self.paused_reason:
                break  # the rest of the batch goes back to pending once the connections end
            try:
                job = self._job(row, date)
            except ValueError as exc:  # HeaderInjection, an address that cannot be encoded
                # One bad row (e.g. a CR/LF name written around the CLI) fails alone; the run goes on.
                failed = DeliveryOutcome(
                    row.id, row.subscriber_id, DeliveryState.FAILED, None, f"message not built: {exc}"
                )
                self.breaker.watch(failed)
                self._results.put(failed)
            else:
                self._jobs.put(job)
            taken += 1
        return taken

    def _wind_down(
        self,
        workers: list[threading.Thread],
        journal: Journal,
        pending: list[DeliveryOutcome],
        tally: dict[str, int],
        *,
        clean: bool,
    ) -> None:
        """End the connection threads; after a failure commit what came back; give back the rows
        no connection took; close the journal (removed once every result in it is committed)."""
        for _ in workers:
            self._jobs.put(None)
        for worker in workers:
            worker.join(timeout=self.settings.smtp.timeout + 5)
        ended = not any(w.is_alive() for w in workers)
        committed = False
        if not clean:
            # Results that arrived before the failure are in the journal; commit what we can.
            self._collect(pending, tally)
        if ended:
            self._give_back_untried(pending)
        if not clean:
            committed = self._commit_after_failure(pending)
        # A journal whose every result is committed (no connection still sending) says nothing more.
        journal.close(remove=clean or (committed and ended))

    def _give_back_untried(self, pending: list[DeliveryOutcome]) -> None:
        """After a pause or a stop (Ctrl-C, SIGTERM, an error), with every connection thread ended:
        rows this sender claimed that no connection ever took (the rest of the claimed batch) go
        back to pending at once, for a resume or another worker, instead of waiting out their
        lease. Rows a connection took have an outcome, committed or in ``pending``."""
        untried = self.leases.untried({o.delivery_id for o in pending})
        if not untried:
            return
        try:
            self.outbox.give_back(untried, token=self.token, reply=self._untried_reply())
        except (
            Exception
        ) as exc:  # the database may be the failure: the rows come back when their lease runs out
            log.warning(
                "edition %s: could not give back %d untried rows (%s)",
                self.edition_id,
                len(untried),
                str(exc).splitlines()[0][:200],
            )

    def _untried_reply(self) -> str:
        return f"{'edition paused' if self.paused_reason else 'sender stopped'} before this row was tried"

    def _commit_after_failure(self, pending: list[DeliveryOutcome]) -> bool:
        """Commit a failed run's collected results; while the database is away (a restart takes
        seconds) retry with backoff until the rows' lease ends. Each result committed here is a
        row the next holder does not send again: an uncommitted one is sent again once the lease
        runs out, as this process, alive, keeps its journal to itself. False: the journal keeps them."""
        lease_ends = self.leases.ends()
        pause = 0.25
        while True:
            try:
                self._commit(pending)
                return True
            except Exception as exc:
                reason = str(exc).splitlines()[0][:200]
                if not isinstance(exc, DBAPIError) or time.monotonic() + pause > lease_ends:
                    log.error(
                        "could not commit the last results (%s); a resume will replay the journal", reason
                    )
                    return False
                log.warning("could not commit the last results (%s); retrying in %.2f s", reason, pause)
                time.sleep(pause)
                pause = min(pause * 2, 8.0)

    def _job(self, row: Delivery, date: str) -> Job:
        """The row's message, built and signed, with its VERP envelope sender."""
        unsubscribe = self.signer.make(Purpose.UNSUBSCRIBE, row.subscriber_id)
        preferences = self.signer.make(Purpose.PREFERENCES, row.subscriber_id)
        data = self._signed_message(
            row,
            date,
            unsubscribe_url=f"{self.base_url}/unsubscribe/{unsubscribe}",
            preferences_url=f"{self.base_url}/preferences/{preferences}",
        )
        # VERP: a bounce names the row it is about, so late bounces find their subscriber.
        mail_from = envelope_sender(self.settings.mail, self.signer.make(Purpose.BOUNCE, row.id))
        return Job(row, mail_from, data)

    def _signed_message(
        self, row: Delivery, date: str, *, unsubscribe_url: str, preferences_url: str
    ) -> bytes:
        """The one place a digest is signed (DKIM, every configured key): the row's variant with
        its reader's values spliced in, dot-stuffed for SMTP; unsigned when no key is configured."""
        variant = self.prepared[row.variant_id]
        build = variant.for_recipient if self.dkim is None else partial(self.dkim.for_recipient, variant)
        return build(
            to_address=row.email,
            to_name=row.name,
            message_id=row.message_id,
            date=date,
            unsubscribe_url=unsubscribe_url,
            preferences_url=preferences_url,
            dot_stuffed=True,
        )

    def _settle(
        self, pending: list[DeliveryOutcome], tally: dict[str, int], in_flight: int, *, at_most: int
    ) -> int:
        """Collect results, committing them when due, until at most ``at_most`` jobs are still
        without one; returns how many are.

        The main thread looks every ``RESULTS_POLL`` seconds instead of waking for each result:
        at a thousand messages a second, a wake-up per message cost as much CPU as building it.
        """
        while True:
            in_flight -= self._collect(pending, tally)
            self._refresh_inactive()
            if self._commit_due(pending):
                self._commit(pending)
            if in_flight <= at_most:
                return in_flight
            time.sleep(RESULTS_POLL)

    def _collect(self, pending: list[DeliveryOutcome], tally: dict[str, int]) -> int:
        """Take every result the connections have reported so far (never waits); how many."""
        got = 0
        while not self._results.empty():  # the main thread is the only reader
            outcome = self._results.get_nowait()
            got += 1
            pending.append(outcome)
            tally[outcome.state.value] = tally.get(outcome.state.value, 0) + 1
            if self.on_outcome is not None:
                self.on_outcome(outcome)
        return got

    def _refresh_inactive(self) -> None:
        """Every half second, learn who unsubscribed or bounced since the send began."""
        if time.monotonic() - self._inactive_polled < 0.5:
            return
        self._inactive_polled = time.monotonic()
        gone = self.subscribers.inactive_since(self._inactive_checked)
        if gone:
            self.connections.inactive = self.connections.inactive | gone

    def _commit_due(self, pending: list[DeliveryOutcome]) -> bool:
        # By count for throughput, and by time so that a sender that dies leaves at most about
        # delivery.commit_interval seconds of sent-but-unrecorded rows for the next holder to send again.
        return len(pending) >= self.settings.delivery.batch_size or bool(
            pending and time.monotonic() - self._last_commit >= self.settings.delivery.commit_interval
        )

    def _commit(self, pending: list[DeliveryOutcome]) -> None:
        self._last_commit = time.monotonic()
        if not pending:
            return
        written = self.outbox.record_outcomes(pending, as_of=self.as_of, token=self.token)
        self.suppressor.record_failures([o for o in pending if o.delivery_id in written])
        dropped = [
            o for o in pending if o.delivery_id not in written and o.state is not DeliveryState.PENDING
        ]
        if dropped:
            log.warning(
                "edition %s: %d results not recorded: those rows were taken over by another sender",
                self.edition_id,
                len(dropped),
            )
        self.leases.committed(o.delivery_id for o in pending)
        pending.clear()
