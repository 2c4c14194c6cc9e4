"""The result of one delivery attempt, as the sender reports it to the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.models import DeliveryState


@dataclass(frozen=True)
class DeliveryOutcome:
    delivery_id: int
    subscriber_id: int
    state: DeliveryState
    code: int | None = None
    reply: str = ""
    next_attempt_at: datetime | None = None
    expired: bool = False  # failed because it stayed deferred past delivery.max_age (a soft bounce)
