"""Why a sender run stops claiming rows: the circuit breaker, or a refusal of our own side.

The first reason wins and is kept; the main thread and the connection threads report at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from newsletter.delivery.suppression import DOMAIN_PAUSED
from newsletter.models import DeliveryOutcome, DeliveryState

log = logging.getLogger("newsletter.delivery.sender")


class Breaker:
    """Pauses a run when more than ``threshold`` of the last ``window`` attempts failed."""

    def __init__(self, *, edition_id: int, window: int, threshold: float) -> None:
        self.edition_id = edition_id
        self.threshold = threshold
        self.reason = ""  # non-empty: the run is paused, and why
        self._recent: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def pause(self, reason: str) -> None:
        """Pause the run with ``reason`` unless it is already paused (the first reason is kept)."""
        with self._lock:
            if self.reason:
                return
            self.reason = reason
        log.warning("edition %s %s", self.edition_id, reason)

    def watch(self, outcome: DeliveryOutcome) -> None:
        """Count one attempt's outcome; trip when the failure rate goes over the threshold."""
        if outcome.state in (DeliveryState.SUPPRESSED, DeliveryState.PENDING) or outcome.reply.startswith(
            f"rcpt: {DOMAIN_PAUSED}"
        ):
            return  # not attempted: a paused domain's rows say nothing about the server
        with self._lock:
            self._recent.append(outcome.state is not DeliveryState.SENT)
            window = self._recent.maxlen or 0
            if self.reason or len(self._recent) < window:
                return
            rate = sum(self._recent) / window
            if rate <= self.threshold:
                return
            self.reason = (
                f"paused: {rate:.0%} of the last {window} attempts failed (threshold {self.threshold:.0%}); "
                f"last reply {outcome.code or '-'} {outcome.reply[:120]}; fix the cause,"
                " then 'newsletter send --resume'"
            )
        log.warning("edition %s %s", self.edition_id, self.reason)
