"""The console's request guards: security headers, the same-origin rule for POSTs, login rate limits.

- Every console response is ``no-store`` and sends a strict Content-Security-Policy
  (our own scripts and styles only), through the site's own middleware
  (``newsletter.web.headers.SecurityHeaders``) with the console's policy. Digest previews,
  shown in sandboxed frames, get inline styles and may be framed by the console only.
- A state-changing request must come from the console's own origin: a
  ``Sec-Fetch-Site`` other than same-origin, or an ``Origin`` (else ``Referer``) whose
  host is not the request's host, is refused; a POST with neither is refused too
  (every browser sends Origin on a POST). This is on top of the CSRF token.
"""

from __future__ import annotations

import time
from collections import deque
from threading import Lock
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp

from newsletter.web.headers import SecurityHeaders

CONSOLE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none';"
    " base-uri 'none'; frame-ancestors 'self'"
)
# The API's browsable docs (spectree's Swagger UI page) load Swagger UI from unpkg.
DOCS_CSP = (
    "default-src 'none'; style-src https://unpkg.com 'unsafe-inline';"
    " script-src https://unpkg.com 'unsafe-inline'; img-src 'self' data: https:; connect-src 'self';"
    " frame-ancestors 'none'"
)
FRAME_SUFFIX = "/frame"


def csp_for(path: str) -> str:
    if path.endswith(FRAME_SUFFIX):
        return FRAME_CSP
    if path.startswith("/api/v1/docs"):
        return DOCS_CSP
    return CONSOLE_CSP


def console_headers(app: ASGIApp) -> SecurityHeaders:
    """The site's security-header middleware with the console's policy: its CSP per path,
    Referrer-Policy same-origin (the console links to itself), and no-store everywhere."""
    return SecurityHeaders(app, csp_for=csp_for, referrer="same-origin", no_store=True)


def same_origin(request: Request) -> bool:
    """True when a state-changing request demonstrably comes from a page of this host."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(source).netloc.lower() == host.lower() and bool(host)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class AttemptLimiter:
    """At most ``limit`` attempts per key within ``window`` seconds (in memory, per process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = {}
        self._lock = Lock()

    def hit(self, key: str) -> float:
        """Count one attempt; 0 if allowed, else the seconds until the next is."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            if len(self._hits) > 10_000:  # bounded memory under a spray of addresses
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
            return 0.0
