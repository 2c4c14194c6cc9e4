"""Rate limits on the `limits` library: in memory for one process, on Redis for several.

Used per client network and per target mailbox on /subscribe and /manage, so
neither one client nor many clients can make us mail one inbox repeatedly.

- The storage is ``web.rate_limit_storage``: ``memory://`` (the default: one
  ``serve`` process) or ``redis://host:port/db`` (every web process shares the counts).
- Sliding-window counters: two integers per key, expired by the storage when the
  window passes, so memory is bounded by the keys seen in one window (no scan, no
  global lock: the old limiter kept every hit and scanned all keys under a lock).
- Keys are chosen by the caller: ``client_key`` groups an IPv6 client by its /64
  (one subscriber line owns a whole /64), the web app keys targets by canonical mailbox.
- A storage that fails (Redis down) lets the request through and logs it: losing
  the limit for a while is better than refusing every signup.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger("newsletter.web.ratelimit")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` hits per ``window`` seconds."""

    count: int
    window: float


@dataclass(frozen=True)
class RateLimits:
    """The web app's limits; tests pass tighter ones to create_app."""

    per_client: Limit = Limit(10, 600.0)  # posts to /subscribe and /manage together, per client network
    per_target: Limit = Limit(3, 3600.0)  # posts naming one mailbox (canonical: no +tag, Gmail without dots)


def open_storage(uri: str) -> Storage:
    """The counters' storage for a ``web.rate_limit_storage`` URI."""
    storage = storage_from_string(uri)
    assert isinstance(storage, Storage)  # the sync storages: memory://, redis://
    return storage


class RateLimiter:
    """Counts hits per key in one namespace; ``hit`` records one and says whether it is allowed."""

    def __init__(self, limit: Limit, *, storage: Storage, namespace: str) -> None:
        self.limit = limit
        self.item = RateLimitItemPerSecond(
            limit.count, max(1, int(limit.window)), namespace=f"newsletter-{namespace}"
        )
        self.strategy = SlidingWindowCounterRateLimiter(storage)

    def hit(self, key: str) -> float:
        """Record a hit; 0 if allowed, else the seconds until one would be."""
        try:
            if self.strategy.hit(self.item, key):
                return 0.0
            stats = self.strategy.get_window_stats(self.item, key)
        except Exception:  # the storage is down: let the request through, say so
            log.exception("rate limit storage failed; request allowed")
            return 0.0
        return max(1.0, stats.reset_time - time.time())


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
