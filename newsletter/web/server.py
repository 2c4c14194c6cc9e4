"""uvicorn for the web app: connection caps, timeouts and which proxies are believed.

``uvicorn_config`` is the one place `newsletter serve` (and the tests) turn
``web.*`` settings into a uvicorn.Config:

- ``web.limit_concurrency``: above that many connections or tasks a request gets
  503 at once instead of waiting behind them;
- ``web.timeout_keep_alive``: an idle keep-alive connection is closed after it, and
  (``DeadlineH11Protocol``) so is a connection that has not sent a whole request line
  and headers within it plus ``HEADER_GRACE`` seconds: uvicorn alone waits for ever,
  so 1,100 silent connections used to starve every real client;
- ``web.max_header_bytes``: h11's bound on an incomplete request head;
- ``web.trusted_proxies``: X-Forwarded-For / -Proto are read only from these
  peers (none by default), so a client cannot choose its own address, and with it
  its rate-limit key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from newsletter.config import Settings

HEADER_GRACE = 5.0  # seconds beyond web.timeout_keep_alive for a request line and headers to arrive


class DeadlineH11Protocol(H11Protocol):
    """h11 with a deadline for each request head: silent or trickling connections are closed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        self.loop.call_later(self.timeout_keep_alive + HEADER_GRACE, self._expire, self.cycle)

    def _expire(self, armed_cycle: Any) -> None:
        # No new request began since the deadline was armed: the peer is idle or trickling.
        if self.cycle is armed_cycle and not self.transport.is_closing():
            self.transport.close()


def trusted_proxies(settings: Settings) -> list[str]:
    return [p.strip() for p in settings.web.trusted_proxies.split(",") if p.strip()]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options the ``web.*`` keys set (for uvicorn.run / uvicorn.Config, beside host and port)."""
    web = settings.web
    proxies = trusted_proxies(settings)
    return {
        "http": DeadlineH11Protocol,
        "limit_concurrency": web.limit_concurrency,
        "timeout_keep_alive": web.timeout_keep_alive,
        "h11_max_incomplete_event_size": web.max_header_bytes,
        # uvicorn's own default trusts 127.0.0.1; here nothing unless configured.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }


def uvicorn_config(
    app: Any, settings: Settings, *, host: str | None = None, port: int | None = None, **extra: Any
) -> uvicorn.Config:
    """The uvicorn.Config of `newsletter serve` for ``app`` (``extra``: more uvicorn options)."""
    return uvicorn.Config(
        app,
        host=host or settings.web.host,
        port=port or settings.web.port,
        server_header=False,
        **uvicorn_options(settings),
        **extra,
    )
