"""In-memory sliding-window rate limits (one process; enough for one `serve`).

Used per client address and per target address on /subscribe and /manage, so
neither one client nor many clients can make us mail one inbox repeatedly.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """At most ``count`` hits per ``window`` seconds."""

    count: int
    window: float


@dataclass(frozen=True)
class RateLimits:
    """The web app's limits; tests pass tighter ones to create_app."""

    per_client: Limit = Limit(10, 600.0)  # posts to /subscribe and /manage together, per client address
    per_target: Limit = Limit(3, 3600.0)  # posts naming one email address


class RateLimiter:
    """Counts hits per key; ``hit`` records one and says whether it is within the limit."""

    MAX_KEYS = 100_000  # beyond this, expired keys are purged so memory stays bounded

    def __init__(self, limit: Limit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Record a hit; 0 if allowed, else the seconds until the next one would be."""
        now = self.clock()
        with self._lock:
            if len(self._hits) >= self.MAX_KEYS:
                self._purge(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.limit.window:
                hits.popleft()
            if len(hits) >= self.limit.count:
                return max(1.0, hits[0] + self.limit.window - now)
            hits.append(now)
            return 0.0

    def _purge(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.limit.window]:
            del self._hits[key]
