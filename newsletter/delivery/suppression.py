"""Suppression: which failures mean an address must not be mailed again.

A hard bounce (the address does not exist or is disabled: enhanced status
5.1.x or 5.2.1, or a bare 550/551/553 saying so) suppresses the subscriber at
once (status bounced). Other permanent failures and deferrals that expired are
soft: ``delivery.soft_bounce_limit`` of them within ``delivery.soft_bounce_window``
days suppress too. 4xx replies alone never bounce anyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.models import DeliveryOutcome, DeliveryState, SubscriberStatus
from newsletter.storage.bounces import BounceStore
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore

ENHANCED_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
UNKNOWN_USER_RE = re.compile(r"user unknown|no such user|unknown user|does not exist|mailbox unavailable|invalid recipient|recipient rejected|address rejected", re.I)


def enhanced_status(text: str) -> str:
    """The RFC 3463 status in a reply ('5.1.1'), or ''."""
    match = ENHANCED_RE.search(text or "")
    return ".".join(match.groups()) if match else ""


def bounce_kind(code: int | None, reply: str) -> str | None:
    """'hard', 'soft', or None (not a bounce: success or a transient reply)."""
    status = enhanced_status(reply)
    if status.startswith("4") or (code is not None and 400 <= code < 500 and not status.startswith("5")):
        return None
    if status.startswith("5.1.") or status == "5.2.1":
        return "hard"
    if status.startswith("5."):
        return "soft"
    if code is not None and 500 <= code < 600:
        return "hard" if code in (550, 551, 553) and UNKNOWN_USER_RE.search(reply or "") else "soft"
    return None


class Suppressor:
    """Records bounces and suppresses subscribers by the policy above."""

    def __init__(self, settings: Settings, subscribers: SubscriberStore, bounces: BounceStore, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.subscribers = subscribers
        self.bounces = bounces
        self.clock = clock

    def record(self, *, subscriber_id: int, delivery_id: int | None, code: int | None, reply: str, source: str, kind: str | None = None, now: datetime | None = None) -> str | None:
        """Record one failure; returns the kind recorded ('hard'/'soft') or None if it is not a bounce.

        Suppresses the subscriber (status bounced) on a hard bounce, or when soft
        bounces within the window reach the limit.
        """
        now = now or self.clock()
        kind = kind or bounce_kind(code, reply)
        if kind is None:
            return None
        status = enhanced_status(reply)
        self.bounces.record_bounce(subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, code=code, status=status, reply=reply, source=source, now=now)
        if kind == "hard":
            self.subscribers.set_status(subscriber_id, SubscriberStatus.BOUNCED, reason=f"hard bounce {code or ''} {status} {reply}".strip(), now=now)
        else:
            window = now - timedelta(days=self.settings.delivery.soft_bounce_window)
            if self.bounces.count_bounces(subscriber_id, kind="soft", since=window) >= self.settings.delivery.soft_bounce_limit:
                self.subscribers.set_status(subscriber_id, SubscriberStatus.BOUNCED, reason=f"{self.settings.delivery.soft_bounce_limit} soft bounces within {self.settings.delivery.soft_bounce_window} days", now=now)
        return kind

    def record_failures(self, outcomes: Iterable[DeliveryOutcome]) -> None:
        """Record every failed send among ``outcomes``; an expired deferral counts as a soft bounce."""
        for outcome in outcomes:
            if outcome.state is DeliveryState.FAILED:
                self.record(
                    subscriber_id=outcome.subscriber_id,
                    delivery_id=outcome.delivery_id,
                    code=outcome.code,
                    reply=outcome.reply,
                    source="smtp",
                    kind="soft" if outcome.expired else None,
                )
