"""Security headers on every response (pure ASGI middleware, so streaming is untouched).

One middleware for the subscriber site and the operator console; each passes its own
Content-Security-Policy per path, and X-Frame-Options follows the policy's frame-ancestors.

The site's pages load only our own stylesheet and post only to us. Every page refuses to be
framed except /embed, which exists to be framed by the report pages. The archive shows a
digest whose CSS premailer inlined into style attributes, so it alone allows inline styles
(still no scripts anywhere). Referrer-Policy no-referrer keeps link tokens out of other
sites' logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'"
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; base-uri 'none'"
)
NO_FRAMES = "; frame-ancestors 'none'"
EMBED_PATH = "/embed"
# X-Frame-Options for the browsers that ignore frame-ancestors, read off the CSP.
_FRAME_OPTIONS = {"frame-ancestors 'none'": b"DENY", "frame-ancestors 'self'": b"SAMEORIGIN"}


def site_csp(path: str) -> str:
    """The subscriber site's Content-Security-Policy for a request path."""
    csp = ARCHIVE_CSP if path.startswith("/archive/") else PAGE_CSP
    return csp if path == EMBED_PATH else csp + NO_FRAMES


def headers_for(
    path: str,
    *,
    csp_for: Callable[[str], str] = site_csp,
    referrer: str = "no-referrer",
    no_store: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The security headers for a request path: CSP, the X-Frame-Options matching its
    frame-ancestors (none when framing is allowed), Referrer-Policy, nosniff, COOP, and
    Cache-Control: no-store when asked."""
    csp = csp_for(path)
    headers = [
        (b"content-security-policy", csp.encode()),
        (b"referrer-policy", referrer.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    frame_options = next((v for k, v in _FRAME_OPTIONS.items() if k in csp), None)
    if frame_options is not None:
        headers.append((b"x-frame-options", frame_options))
    if no_store:
        headers.append((b"cache-control", b"no-store"))
    return headers


class SecurityHeaders:
    """Adds ``headers_for(path, ...)`` to every HTTP response, replacing same-named ones.

    The site uses the defaults; the console passes its own ``csp_for``, ``referrer`` and
    ``no_store`` (see ``newsletter.admin.security``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        csp_for: Callable[[str], str] = site_csp,
        referrer: str = "no-referrer",
        no_store: bool = False,
    ) -> None:
        self.app = app
        self.csp_for, self.referrer, self.no_store = csp_for, referrer, no_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(
            scope.get("path", ""), csp_for=self.csp_for, referrer=self.referrer, no_store=self.no_store
        )
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SecuredApp(Starlette):
    """Starlette with a security-header middleware outside everything, its 500 answer included
    (a user middleware sits inside ServerErrorMiddleware and never sees that answer).

    ``headers`` wraps the app: ``SecurityHeaders`` (the site's policy) unless given, e.g. the
    console's ``newsletter.admin.security.console_headers``.
    """

    def __init__(
        self, *args: Any, headers: Callable[[ASGIApp], ASGIApp] = SecurityHeaders, **kwargs: Any
    ) -> None:
        self.security_headers = headers
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self.security_headers(super().build_middleware_stack())
