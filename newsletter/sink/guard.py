"""What keeps a web page or a rebinding DNS name from driving the sink's viewer.

* `HostPolicy`: the viewer answers only requests whose Host is a loopback name or address
  (localhost, *.localhost, 127.0.0.0/8, ::1), the address it listens on, or a name the
  operator allowed (`--allow-host`). Anything else is 421: a page on a rebinding DNS name
  that now points at 127.0.0.1 reads nothing.
* `same_origin_refusal`: a request that changes state (every method but GET/HEAD) must carry
  the sink's per-run token (header `X-Sink-Token`, or the form field `sink_token` of the
  viewer's own forms) and must not come from another origin (`Origin`, `Sec-Fetch-Site`).
  A cross-site form POST or a no-cors fetch can send neither the header nor the token.
* `SecurityHeaders`: every response carries nosniff, no-referrer, and a CSP with
  frame-ancestors 'none' unless the route set its own (viewer pages, message bodies).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.sink.net import is_loopback

TOKEN_HEADER = "X-Sink-Token"
TOKEN_FIELD = "sink_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})

# Viewer pages: scripts, styles and frames from the sink only, nothing inline, never framed.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# A message body: a sandbox (no scripts, no forms, no popups, an opaque origin) even when it is
# opened as a top-level page; its images and styles load as a mail client would load them.
BODY_CSP = (
    "sandbox; default-src 'none'; img-src * data:; style-src 'unsafe-inline' *; font-src *; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)
# Anything else (JSON, raw bytes, errors): inert, never framed.
DEFAULT_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"

_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def split_host(value: str) -> str:
    """The host part of a Host header value, lower-cased, without port, brackets or final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class HostPolicy:
    """The Host values the viewer answers: loopback, the listen address, and `extra` names."""

    def __init__(self, listen_host: str, extra: Iterable[str] = ()) -> None:
        self.names = frozenset(split_host(h) for h in (listen_host, *extra) if h.strip())

    def allows(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        host = split_host(host_header)
        return is_loopback(host) or host in self.names


class SecurityHeaders:
    """ASGI middleware: 421 for a Host outside `policy`; security headers on every response."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if not self.policy.allows(host):
            response = PlainTextResponse(
                f"421 Misdirected Request: the sink answers only loopback hosts, not {host!r}; "
                "start it with --allow-host NAME to allow a name\n",
                status_code=421,
            )
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in _COMMON_HEADERS if h[0] not in names)
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
                if b"x-frame-options" not in names:
                    headers.append((b"x-frame-options", b"DENY"))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


async def same_origin_refusal(request: Request, token: str) -> str | None:
    """Why this state-changing request is refused, or None if it proves it comes from the viewer."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: a {site} request cannot change the sink (Sec-Fetch-Site)"
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        if origin.lower() != own:
            return f"refused: Origin {origin!r} is not the sink's own ({own})"
    offered = request.headers.get(TOKEN_HEADER)
    if offered is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        fields: dict[str, Any] = parse_qs((await request.body()).decode("latin-1"))
        offered = (fields.get(TOKEN_FIELD) or [None])[0]
    if offered is None or not hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode()):
        return (
            f"refused: a request that changes the sink needs its token in the {TOKEN_HEADER} header "
            "(printed by `newsletter sink` at start; SinkServer.token in Python)"
        )
    return None
