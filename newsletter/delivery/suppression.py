"""Suppression: what a judged failure does to a reader, and to a receiving domain.

Every failure is judged once, by ``delivery.judgement.judge`` (the table of codes):

- *bad address* (5.1.1, 5.2.1 ...) records a ``hard`` bounce and suppresses the
  subscriber at once (status bounced);
- *soft* (mailbox full, a deferral that expired here or in a relay) records a
  ``soft`` bounce; ``delivery.soft_bounce_limit`` of them within
  ``delivery.soft_bounce_window`` days suppress;
- *blocked* (5.7.x policy, spam, DMARC, blocklists) records a ``blocked`` event
  that never suppresses anyone; ``BLOCKED_BURST`` of them for one receiving domain
  within ``BLOCKED_WINDOW`` pause sending to that domain (``DomainGuard``);
- *sender problem* (HELO, MAIL FROM, AUTH, TLS, relay access) records nothing
  against the reader: the sender pauses the edition instead.

4xx replies inside a run are retried, never recorded.

**A judgement counts once**: one outbox row is one message to one reader, so it is
judged failed at most once and complained about at most once, whatever reports arrive
about it (the same DSN replayed, a Maildir judged again, a webhook event re-sent; see
``BounceStore.mark_judged``). A repeat records nothing and returns None / False.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.delivery.judgement import Judgement, Verdict, enhanced_status, judge
from newsletter.models import DeliveryOutcome, DeliveryState, SubscriberStatus
from newsletter.storage.bounces import BounceStore
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore

# A burst of policy refusals from one receiving domain pauses sending there: the
# provider is refusing *us*, and pushing on only deepens the block.
BLOCKED_BURST = 5
BLOCKED_WINDOW = timedelta(hours=1)
DOMAIN_PAUSED = "domain paused"
KINDS = {Verdict.BAD_ADDRESS: "hard", Verdict.SOFT: "soft", Verdict.BLOCKED: "blocked"}


def split_stage(reply: str) -> tuple[str, str]:
    """The sender writes failed rows' replies as 'stage: text'; (stage, text), stage '' if none."""
    stage, sep, text = reply.partition(": ")
    if sep and stage in ("connect", "helo", "tls", "auth", "mail", "rcpt", "data", "content", "reply"):
        return stage, text
    return "", reply


class Suppressor:
    """Records judged failures and suppresses subscribers by the policy above."""

    def __init__(
        self, settings: Settings, subscribers: SubscriberStore, bounces: BounceStore, *, clock: Clock = utcnow
    ) -> None:
        self.settings = settings
        self.subscribers = subscribers
        self.bounces = bounces
        self.clock = clock

    def record(
        self,
        *,
        subscriber_id: int,
        delivery_id: int | None,
        code: int | None,
        reply: str,
        source: str,
        stage: str = "rcpt",
        status: str = "",
        judgement: Judgement | None = None,
        now: datetime | None = None,
    ) -> Judgement | None:
        """Judge one failure (unless ``judgement`` is given) and record what it means.

        Returns the judgement (a sender problem records nothing), or None when this
        outbox row's failure was already counted.
        """
        now = now or self.clock()
        judgement = judgement or judge(code, reply, status=status, stage=stage)
        kind = KINDS.get(judgement.verdict)
        if kind is None:
            return judgement
        if delivery_id is not None and not self.bounces.mark_judged([f"row:{delivery_id}:failure"], now=now):
            return None
        status = judgement.status or enhanced_status(status) or enhanced_status(reply)
        self.bounces.record_bounce(
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            kind=kind,
            code=code,
            status=status,
            reply=reply,
            source=source,
            now=now,
        )
        if judgement.verdict is Verdict.BAD_ADDRESS:
            self.subscribers.set_status(
                subscriber_id,
                SubscriberStatus.BOUNCED,
                reason=f"hard bounce {code or ''} {status} {reply}".strip(),
                now=now,
            )
        elif judgement.verdict is Verdict.SOFT:
            window = now - timedelta(days=self.settings.delivery.soft_bounce_window)
            if (
                self.bounces.count_bounces(subscriber_id, kind="soft", since=window)
                >= self.settings.delivery.soft_bounce_limit
            ):
                self.subscribers.set_status(
                    subscriber_id,
                    SubscriberStatus.BOUNCED,
                    reason=f"{self.settings.delivery.soft_bounce_limit} soft bounces within "
                    f"{self.settings.delivery.soft_bounce_window} days",
                    now=now,
                )
        return judgement

    def complaint(
        self,
        *,
        subscriber_id: int,
        delivery_id: int | None,
        reason: str,
        source: str,
        now: datetime | None = None,
    ) -> bool:
        """A reader reported a digest as spam (ARF, a provider's complaint event): unsubscribe them.

        False (nothing done) when this outbox row's complaint was already counted: a
        replayed complaint never unsubscribes a reader who came back since.
        """
        now = now or self.clock()
        if delivery_id is not None and not self.bounces.mark_judged(
            [f"row:{delivery_id}:complaint"], now=now
        ):
            return False
        self.bounces.record_bounce(
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            kind="complaint",
            code=None,
            status="",
            reply=reason,
            source=source,
            now=now,
        )
        self.subscribers.set_status(subscriber_id, SubscriberStatus.UNSUBSCRIBED, reason=reason, now=now)
        return True

    def record_failures(self, outcomes: Iterable[DeliveryOutcome]) -> None:
        """Record every failed send among ``outcomes``.

        An expired deferral counts as a soft bounce -- unless its last failure was
        our own (a refused connection, HELO or login): then nobody is blamed.
        """
        for outcome in outcomes:
            if outcome.state is not DeliveryState.FAILED:
                continue
            stage, text = split_stage(outcome.reply.removeprefix("gave up after delivery.max_age: "))
            judgement = judge(outcome.code, text, stage=stage or "rcpt")
            if outcome.expired and judgement.verdict is not Verdict.SENDER:
                judgement = Judgement(Verdict.SOFT, judgement.status, "deferral expired")
            self.record(
                subscriber_id=outcome.subscriber_id,
                delivery_id=outcome.delivery_id,
                code=outcome.code,
                reply=outcome.reply,
                source="smtp",
                judgement=judgement,
            )


def domain_of(email: str) -> str:
    return email.rsplit("@", 1)[-1].lower()


class DomainGuard:
    """Receiving domains paused by a burst of policy refusals; shared by a run's threads.

    Seeded from the store's recent ``blocked`` events (DSNs included), then counts the
    run's own blocked replies.
    """

    def __init__(self, bounces: BounceStore, *, now: datetime, burst: int = BLOCKED_BURST) -> None:
        self.burst = burst
        self._counts: dict[str, int] = dict(bounces.blocked_by_domain(since=now - BLOCKED_WINDOW))
        self._lock = threading.Lock()

    def note_blocked(self, email: str) -> None:
        with self._lock:
            domain = domain_of(email)
            self._counts[domain] = self._counts.get(domain, 0) + 1

    def paused(self, email: str) -> str:
        """Why sending to this address's domain is paused, or ''."""
        domain = domain_of(email)
        n = self._counts.get(domain, 0)
        if n >= self.burst:
            minutes = int(BLOCKED_WINDOW.total_seconds() // 60)
            return f"{DOMAIN_PAUSED}: {n} policy refusals (blocked) from {domain} within {minutes} min"
        return ""
