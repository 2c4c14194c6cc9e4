"""The sender's connection threads: one per SMTP connection, each taking queued messages,
sending them, journaling each result at once and reporting it to the main thread.

How a reply becomes a row's outcome (sent, failed, deferred, unknown, or back to pending
for a refusal of our own side) is decided here, as each reply comes, and when a row or a
connection is tried again is the retry policy's answer (``delivery.retry``): a connection
never waits on a row refused for now, it defers the row and takes the next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from newsletter.config import Settings
from newsletter.delivery.breaker import Breaker
from newsletter.delivery.journal import Journal
from newsletter.delivery.judgement import Verdict, judge, sender_hint
from newsletter.delivery.leases import Leases
from newsletter.delivery.retry import RetryPolicy
from newsletter.delivery.smtp_client import Attempt, Result, SmtpConnection
from newsletter.delivery.suppression import DomainGuard
from newsletter.models import Delivery, DeliveryOutcome, DeliveryState
from newsletter.storage.part import Clock

log = logging.getLogger("newsletter.delivery.sender")


@dataclass(frozen=True)
class Job:
    """One message ready to go: its row, envelope sender and final (signed, dot-stuffed) bytes."""

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


class Connections:
    """The connection threads of one sender run and what they share.

    The main thread puts ``Job``s (and one None per thread to end) on ``jobs`` and reads
    outcomes from ``results``; ``inactive`` is the set of readers who left during the send,
    replaced by the main thread as it learns of them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy,
        jobs: queue.SimpleQueue[Job | None],
        results: queue.SimpleQueue[DeliveryOutcome],
        stop: threading.Event,
        breaker: Breaker,
        leases: Leases,
        domains: DomainGuard,
        clock: Clock,
        give_up_after: datetime | None,
        untried_reply: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.jobs = jobs
        self.results = results
        self.stop = stop
        self.breaker = breaker
        self.leases = leases
        self.domains = domains
        self.clock = clock
        self.give_up_after = give_up_after
        self.untried_reply = untried_reply
        self.inactive: frozenset[int] = frozenset()
        self.limiter = RateLimiter(settings.smtp.rate_limit)
        self._live: set[str] = set()  # connection threads holding an open session
        self._live_lock = threading.Lock()
        self.refused_connects = 0  # connects refused while another connection was live (handed back)

    def work(self, journal: Journal) -> None:
        """One connection thread: send queued jobs until a None comes."""
        connection = SmtpConnection(self.settings.smtp)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                if self.breaker.reason or self.stop.is_set():
                    # The breaker tripped, or the run is stopping (an error, Ctrl-C): queued rows
                    # are not attempted; they wait, pending, for the resume.
                    outcome = DeliveryOutcome(
                        job.delivery.id,
                        job.delivery.subscriber_id,
                        DeliveryState.PENDING,
                        None,
                        self.untried_reply(),
                    )
                elif lapsed := self.leases.lapsed(job.delivery.id):
                    # Fenced: the PENDING result below is written only if the row is still ours.
                    outcome = DeliveryOutcome(
                        job.delivery.id, job.delivery.subscriber_id, DeliveryState.PENDING, None, lapsed
                    )
                elif job.delivery.subscriber_id in self.inactive:
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
                self.breaker.watch(outcome)
                self.results.put(outcome)
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

    def _hand_back(self, job: Job, parks: int) -> None:
        """Give the row to a live connection and park this one: the server allows fewer connections now."""
        self.jobs.put(job)
        self.refused_connects += 1
        pause = self.policy.pause(parks)
        log.info("connection refused while others are live: parking %.2fs", pause)
        self.stop.wait(pause)

    def _deliver(self, connection: SmtpConnection, journal: Journal, job: Job) -> DeliveryOutcome | None:
        """The row's outcome; None when it was handed to a live connection instead.

        A reply refusing the message for now (4xx: greylisting, a full mailbox) is not retried
        here: the row is deferred at once with its own next attempt, and this connection takes
        the next row. A connection refused or closed (421) while another is live hands the row
        to it and parks; a connection that failed otherwise under the row (timed out, lost
        before the data, or the only one: the server is away) pauses and tries the row again,
        ``smtp.retries`` times, then defers it.
        """
        row = job.delivery
        failures = 0  # times in a row this row's connection failed under it
        while True:
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
            if _sender_fatal(attempt):
                return self._pause_for_sender(row, attempt)
            if attempt.result is not Result.TRANSIENT:
                break
            if reused and attempt.connection_problem and attempt.stage == "mail":
                # The server closed an idle or exhausted connection (e.g. after N messages):
                # open a fresh one at once; this is not a failure of the row.
                continue
            log.info(
                "transient failure for row %s at %s: %s %s",
                row.id,
                attempt.stage,
                attempt.code,
                attempt.reply,
            )
            if not attempt.connection_problem or failures >= self.policy.reconnects:
                break  # deferred with its own next attempt; this connection goes on
            # Back off this connection only; the other connections keep sending.
            if self.stop.wait(self.policy.pause(failures)):
                break
            failures += 1
        return self._outcome(row, attempt)

    def _pause_for_sender(self, row: Delivery, attempt: Attempt) -> DeliveryOutcome:
        """Blame no reader: the row waits, pending, and the edition pauses with what to fix."""
        self.breaker.pause(
            "paused: the server refused our side, not a reader"
            f" ({attempt.stage}: {attempt.code or '-'} {attempt.reply[:160]}); "
            f"{sender_hint(attempt.stage, attempt.code, attempt.reply)} Then 'newsletter send --resume'."
        )
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
        next_attempt = self.policy.next_attempt(row.attempts, self.clock())
        if self.policy.gives_up(next_attempt, self.give_up_after):
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
