"""Security headers on every response (pure ASGI middleware, so streaming is untouched).

Pages load only our own stylesheet and post only to us. Every page refuses to be
framed except /embed, which exists to be framed by the report pages. The archive
shows a digest whose CSS premailer inlined into style attributes, so it alone
allows inline styles (still no scripts anywhere). Referrer-Policy no-referrer
keeps link tokens out of other sites' logs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'"
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; base-uri 'none'"
)
NO_FRAMES = "; frame-ancestors 'none'"
EMBED_PATH = "/embed"


def headers_for(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers for a request path."""
    framed = path == EMBED_PATH
    csp = ARCHIVE_CSP if path.startswith("/archive/") else PAGE_CSP
    headers = [
        (b"content-security-policy", (csp if framed else csp + NO_FRAMES).encode()),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if not framed:
        headers.append((b"x-frame-options", b"DENY"))
    return headers


class SecurityHeaders:
    """Adds ``headers_for(path)`` to every HTTP response, replacing same-named ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope.get("path", ""))
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)
