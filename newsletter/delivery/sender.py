"""The sender: drains an edition's outbox over N SMTP connections.

The main thread claims due rows in batches, splices each recipient's values
into the variant's prepared bytes, and queues the messages; one thread per
SMTP connection sends; results are journaled at once and committed to the
database in batches. The main thread claims the next batch only once at most
one batch is in flight, and looks at the results on a short timer rather than
waking for each. Rules:

- a 4xx (or a lost connection before the data) is retried within the run
  (``smtp.retries`` times, ``delivery.retry_delay`` doubling), then the row is
  deferred with the ``delivery.backoff`` schedule until ``delivery.max_age``;
- a 5xx fails the row; the run goes on;
- a connection lost after the data was sent makes the row "unknown";
- 421, refused connections and timeouts back off that connection only; while
  another connection is live, the row is handed to it at once and the refused
  connection parks, trying again after a doubling pause (the pool shrinks to
  what the server allows and grows back slowly);
- a refusal of our own side (HELO, MAIL FROM, AUTH, TLS, relay access: a
  *sender problem* in ``delivery.judgement``) fails no row and blames no reader:
  the row goes back to pending and the edition pauses with the reason;
- a burst of policy refusals from one receiving domain (``DomainGuard``) defers
  that domain's remaining rows;
- a subscriber who leaves or bounces during the send is skipped (suppressed);
- when more than ``delivery.breaker_threshold`` of the last
  ``delivery.breaker_window`` attempts failed, the run stops claiming rows and
  reports itself paused (the circuit breaker); a resume continues it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import partial
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from newsletter.config import Settings
from newsletter.delivery.dnscheck import ready_signer
from newsletter.delivery.journal import Journal
from newsletter.delivery.judgement import Verdict, judge, sender_hint
from newsletter.delivery.message import PreparedMessage
from newsletter.delivery.smtp_client import Attempt, Result, SmtpConnection, helo_name
from newsletter.delivery.suppression import DOMAIN_PAUSED, DomainGuard, Suppressor
from newsletter.models import Delivery, DeliveryOutcome, DeliveryState
from newsletter.storage.outbox import OutboxStore
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore
from newsletter.tokens import Purpose, TokenSigner

log = logging.getLogger("newsletter.delivery.sender")
LEASE_SAFETY = 0.8  # send only within this part of a lease after its last renewal
ProgressCallback = Callable[[DeliveryOutcome], None]
RESULTS_POLL = 0.005  # seconds between the main thread's looks at the connections' results


def worker_host(configured: str = "") -> str:
    """This machine's name in claimed_by: ``delivery.worker_name``, else the system's host name."""
    return configured.strip() or socket.gethostname()


def worker_name(configured: str = "") -> str:
    """This process's name in the outbox's claimed_by column: host:pid (see ``worker_host``)."""
    return f"{worker_host(configured)}:{os.getpid()}"


@dataclass(frozen=True)
class _Job:
    delivery: Delivery
    mail_from: str
    data: bytes


class RateLimiter:
    """Spaces sends evenly across all connections: at most ``per_second`` messages a second."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


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
        self.paused_reason = ""
        self.halted = halted
        self.halted_reason = ""
        self._recent: deque[bool] = deque(maxlen=settings.delivery.breaker_window)
        self._breaker_lock = threading.Lock()
        self._inactive: frozenset[int] = frozenset()
        self._inactive_checked = clock()
        self._inactive_polled = time.monotonic()
        self.worker = worker_name(settings.delivery.worker_name)
        # Fencing: every row this run claims carries its token; results, renewals and
        # give-backs are written only while a row still carries it.
        self.token = uuid.uuid4().hex
        self._held_lock = threading.Lock()
        self._outstanding: set[int] = set()  # claimed, result not yet committed
        self._lost: set[int] = set()  # taken over by another sender: never sent from here
        self._lease_deadline = time.monotonic() + settings.delivery.lease * LEASE_SAFETY
        self._last_commit = time.monotonic()
        self.base_url = settings.site.base_url.rstrip("/")
        self.bounce_domain = settings.mail.bounce_domain or settings.mail.from_address.rsplit("@", 1)[1]
        self.limiter = RateLimiter(settings.smtp.rate_limit)
        helo_name(
            settings.smtp
        )  # a 'localhost' greeting towards a remote server is refused before any row is claimed
        # SimpleQueue: put and get in C, a few hundred nanoseconds per message. The jobs queue
        # needs no bound: the main thread claims a batch only when at most one is in flight.
        self._results: queue.SimpleQueue[DeliveryOutcome] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.domains = DomainGuard(suppressor.bounces, now=clock())
        self._live: set[str] = set()  # connection threads holding an open session
        self._live_lock = threading.Lock()
        self.refused_connects = 0  # connects refused while another connection was live (handed back)

    # -- main thread ------------------------------------------------------------

    def run(self) -> dict[str, int]:
        """Send every due row; returns how many rows reached each state in this run."""
        journal = Journal(Path(self.settings.delivery.journal_dir), self.edition_id)
        workers = [
            threading.Thread(target=self._work, args=(journal,), name=f"smtp-{i}", daemon=True)
            for i in range(self.settings.smtp.connections)
        ]
        for worker in workers:
            worker.start()
        renewer = threading.Thread(target=self._renew_leases, name="lease-renewal", daemon=True)
        renewer.start()
        tally: dict[str, int] = {}
        pending: list[DeliveryOutcome] = []
        in_flight = 0
        batch = self.settings.delivery.batch_size
        clean = False
        try:
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
                with self._held_lock:
                    self._outstanding.update(r.id for r in rows)
                    self._lease_deadline = time.monotonic() + self.settings.delivery.lease * LEASE_SAFETY
                date = format_datetime(self.clock())
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
                        self._watch_failures(failed)
                        self._results.put(failed)
                    else:
                        self._jobs.put(job)
                    in_flight += 1
            self._settle(pending, tally, in_flight, at_most=0)
            self._commit(pending)
            clean = True
        finally:
            self._stop.set()
            renewer.join(timeout=5)
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
        return tally

    def _give_back_untried(self, pending: list[DeliveryOutcome]) -> None:
        """After a pause or a stop (Ctrl-C, SIGTERM, an error), with every connection thread ended:
        rows this sender claimed that no connection ever took (the rest of the claimed batch) go
        back to pending at once, for a resume or another worker, instead of waiting out their
        lease. Rows a connection took have an outcome, committed or in ``pending``."""
        answered = {o.delivery_id for o in pending}
        with self._held_lock:
            untried = [i for i in self._outstanding if i not in answered]
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
        lease = self.settings.delivery.lease
        with self._held_lock:
            lease_ends = self._lease_deadline + lease * (1 - LEASE_SAFETY)
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

    def _job(self, row: Delivery, date: str) -> _Job:
        variant = self.prepared[row.variant_id]
        unsubscribe = self.signer.make(Purpose.UNSUBSCRIBE, row.subscriber_id)
        preferences = self.signer.make(Purpose.PREFERENCES, row.subscriber_id)
        data = (variant.for_recipient if self.dkim is None else partial(self.dkim.for_recipient, variant))(
            to_address=row.email,
            to_name=row.name,
            message_id=row.message_id,
            date=date,
            unsubscribe_url=f"{self.base_url}/unsubscribe/{unsubscribe}",
            preferences_url=f"{self.base_url}/preferences/{preferences}",
            dot_stuffed=True,
        )
        # VERP: a bounce names the row it is about, so late bounces find their subscriber.
        mail_from = f"bounces+{self.signer.make(Purpose.BOUNCE, row.id)}@{self.bounce_domain}"
        return _Job(row, mail_from, data)

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

    def _watch_failures(self, outcome: DeliveryOutcome) -> None:
        if outcome.state in (DeliveryState.SUPPRESSED, DeliveryState.PENDING) or outcome.reply.startswith(
            f"rcpt: {DOMAIN_PAUSED}"
        ):
            return  # not attempted: a paused domain's rows say nothing about the server
        with self._breaker_lock:  # connection threads report at once
            self._recent.append(outcome.state is not DeliveryState.SENT)
            window = self._recent.maxlen or 0
            if self.paused_reason or len(self._recent) < window:
                return
            rate = sum(self._recent) / window
            if rate > self.settings.delivery.breaker_threshold:
                self.paused_reason = (
                    f"paused: {rate:.0%} of the last {window} attempts failed (threshold {self.settings.delivery.breaker_threshold:.0%}); "
                    f"last reply {outcome.code or '-'} {outcome.reply[:120]}; fix the cause, then 'newsletter send --resume'"
                )
                log.warning("edition %s %s", self.edition_id, self.paused_reason)

    def _refresh_inactive(self) -> None:
        """Every half second, learn who unsubscribed or bounced since the send began."""
        if time.monotonic() - self._inactive_polled < 0.5:
            return
        self._inactive_polled = time.monotonic()
        gone = self.subscribers.inactive_since(self._inactive_checked)
        if gone:
            self._inactive = self._inactive | gone

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
        with self._held_lock:
            self._outstanding.difference_update(o.delivery_id for o in pending)
        pending.clear()

    def _renew_leases(self) -> None:
        """On a timer (a third of ``delivery.lease``), independent of batches and send rate.

        Rows missing from the renewal were taken over by another sender: they are marked
        lost and never sent from here. A renewal that fails leaves the deadline where it
        was, and rows are not sent past it (see ``_lease_lapsed``).
        """
        lease = self.settings.delivery.lease
        interval = max(lease / 3, 0.2)
        while not self._stop.wait(interval):
            started = time.monotonic()
            try:
                held = self.outbox.renew_lease(
                    self.edition_id, worker=self.worker, lease_seconds=lease, token=self.token
                )
            except Exception as exc:  # the database may be restarting: the next beat retries
                log.warning(
                    "edition %s: lease renewal failed (%s); not sending past the lease",
                    self.edition_id,
                    str(exc).splitlines()[0][:200],
                )
                continue
            with self._held_lock:
                lost = {i for i in self._outstanding if i not in held}
                # Rows whose results are collected but not committed are still held: only
                # queued ones can be lost, and a result already journaled stays as it is.
                self._lost |= lost
                self._lease_deadline = started + lease * LEASE_SAFETY
            if lost:
                log.warning(
                    "edition %s: %d rows were taken over by another sender; they will not be sent from here",
                    self.edition_id,
                    len(lost),
                )

    def _lease_lapsed(self, row_id: int) -> str:
        """Why this row must not be sent now ("" when it may): lost, or the lease not renewed in time."""
        with self._held_lock:
            if row_id in self._lost:
                return "taken over by another sender: not sent from here"
            if time.monotonic() > self._lease_deadline:
                return "lease not renewed in time: given back, not sent"
        return ""

    # -- connection threads -------------------------------------------------------

    def _work(self, journal: Journal) -> None:
        connection = SmtpConnection(self.settings.smtp)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if self.paused_reason or self._stop.is_set():
                    # The breaker tripped, or the run is stopping (an error, Ctrl-C): queued rows
                    # are not attempted; they wait, pending, for the resume.
                    outcome = DeliveryOutcome(
                        job.delivery.id,
                        job.delivery.subscriber_id,
                        DeliveryState.PENDING,
                        None,
                        self._untried_reply(),
                    )
                elif lapsed := self._lease_lapsed(job.delivery.id):
                    # Fenced: the PENDING result below is written only if the row is still ours.
                    outcome = DeliveryOutcome(
                        job.delivery.id, job.delivery.subscriber_id, DeliveryState.PENDING, None, lapsed
                    )
                elif job.delivery.subscriber_id in self._inactive:
                    outcome = DeliveryOutcome(
                        job.delivery.id,
                        job.delivery.subscriber_id,
                        DeliveryState.SUPPRESSED,
                        None,
                        "subscriber left during the send",
                    )
                elif why := self.domains.paused(job.delivery.email):
                    outcome = self._outcome(job.delivery, Attempt(Result.TRANSIENT, None, why, "rcpt"))
                else:
                    delivered = self._deliver(connection, journal, job)
                    if delivered is None:  # handed to a live connection; this one parks
                        continue
                    outcome = delivered
                journal.result(job.delivery.id, outcome.state, outcome.code, outcome.reply)
                # Judged here, as each reply comes, not when the main thread collects it: a busy
                # main thread would otherwise let the connections try rows after the breaker tripped.
                self._watch_failures(outcome)
                self._results.put(outcome)
        finally:
            self._set_live(False)
            connection.close()

    def _set_live(self, live: bool) -> None:
        name = threading.current_thread().name
        with self._live_lock:
            (self._live.add if live else self._live.discard)(name)

    def _others_live(self) -> bool:
        name = threading.current_thread().name
        with self._live_lock:
            return bool(self._live - {name})

    def _hand_back(self, job: _Job, parks: int) -> None:
        """Give the row to a live connection and park this one: the server allows fewer connections now."""
        self._jobs.put(job)
        self.refused_connects += 1
        pause = min(max(self.settings.delivery.retry_delay, 0.05) * 2**parks, 30.0)
        log.info("connection refused while others are live: parking %.2fs", pause)
        self._stop.wait(pause)

    def _deliver(self, connection: SmtpConnection, journal: Journal, job: _Job) -> DeliveryOutcome | None:
        """The row's outcome; None when it was handed to a live connection instead."""
        row = job.delivery
        delay = self.settings.delivery.retry_delay
        attempt = Attempt(Result.TRANSIENT, None, "not attempted")
        tries = 0
        while tries <= self.settings.smtp.retries:
            if tries:
                # Back off this connection only; the other connections keep sending.
                if self._stop.wait(delay):
                    break
                delay *= 2
            self.limiter.wait()
            reused = connection.sent > 0
            attempt = connection.send(
                job.mail_from,
                row.email,
                job.data,
                before_content=lambda: journal.data_sent(row.id),
                dot_stuffed=True,
            )
            self._set_live(connection.connected)
            if (
                attempt.result is Result.TRANSIENT
                and attempt.connection_problem
                and (attempt.stage == "connect" or attempt.code == 421)
                and self._others_live()
            ):
                # Never defer a row because one connection was refused: a live one takes it.
                self._hand_back(job, connection.parks)
                connection.parks += 1
                return None
            if connection.connected:
                connection.parks = 0
            if self._sender_fatal(attempt):
                return self._pause_for_sender(row, attempt)
            if attempt.result is not Result.TRANSIENT:
                break
            if reused and attempt.connection_problem and attempt.stage == "mail":
                # The server closed an idle or exhausted connection (e.g. after N messages):
                # open a fresh one at once; this is not a failure of the row.
                continue
            tries += 1
            log.info(
                "transient failure for row %s at %s: %s %s",
                row.id,
                attempt.stage,
                attempt.code,
                attempt.reply,
            )
        return self._outcome(row, attempt)

    @staticmethod
    def _sender_fatal(attempt: Attempt) -> bool:
        """Our own side refused for good (HELO, AUTH, TLS, MAIL FROM, relay access): no retry helps."""
        if attempt.result is Result.SENT or attempt.result is Result.UNKNOWN:
            return False
        if attempt.stage in ("tls", "auth"):
            return True
        code = attempt.code if attempt.code is not None and attempt.code > 0 else None
        return (
            code is not None
            and code >= 500
            and judge(code, attempt.reply, stage=attempt.stage).verdict is Verdict.SENDER
        )

    def _pause_for_sender(self, row: Delivery, attempt: Attempt) -> DeliveryOutcome:
        """Blame no reader: the row waits, pending, and the edition pauses with what to fix."""
        if not self.paused_reason:
            self.paused_reason = (
                f"paused: the server refused our side, not a reader ({attempt.stage}: {attempt.code or '-'} {attempt.reply[:160]}); "
                f"{sender_hint(attempt.stage, attempt.code, attempt.reply)} Then 'newsletter send --resume'."
            )
            log.warning("edition %s %s", self.edition_id, self.paused_reason)
        return DeliveryOutcome(
            row.id,
            row.subscriber_id,
            DeliveryState.PENDING,
            attempt.code,
            f"sender problem, not tried: {attempt.stage}: {attempt.reply}",
        )

    def _outcome(self, row: Delivery, attempt: Attempt) -> DeliveryOutcome:
        if attempt.result is Result.SENT:
            return DeliveryOutcome(row.id, row.subscriber_id, DeliveryState.SENT, attempt.code, attempt.reply)
        if attempt.result is Result.PERMANENT:
            if judge(attempt.code, attempt.reply, stage=attempt.stage).verdict is Verdict.BLOCKED:
                self.domains.note_blocked(row.email)
            return DeliveryOutcome(
                row.id,
                row.subscriber_id,
                DeliveryState.FAILED,
                attempt.code,
                f"{attempt.stage}: {attempt.reply}",
            )
        if attempt.result is Result.UNKNOWN:
            return DeliveryOutcome(
                row.id, row.subscriber_id, DeliveryState.UNKNOWN, attempt.code, attempt.reply
            )
        steps = self.settings.delivery.backoff_steps
        wait = steps[min(max(row.attempts, 1) - 1, len(steps) - 1)]
        next_attempt = self.clock() + timedelta(seconds=wait)
        if self.give_up_after is not None and next_attempt > self.give_up_after:
            return DeliveryOutcome(
                row.id,
                row.subscriber_id,
                DeliveryState.FAILED,
                attempt.code,
                f"gave up after delivery.max_age: {attempt.stage}: {attempt.reply}",
                expired=True,
            )
        return DeliveryOutcome(
            row.id,
            row.subscriber_id,
            DeliveryState.DEFERRED,
            attempt.code,
            f"{attempt.stage}: {attempt.reply}",
            next_attempt_at=next_attempt,
        )
