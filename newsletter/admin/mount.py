"""Serving the console beside the subscriber app: paths under /admin and /api go to the console.

A plain ASGI dispatcher rather than Starlette's Mount, so the console keeps its
full paths (it also runs alone on admin.host/admin.port) and the subscriber app
keeps its lifespan (the scheduler).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from newsletter.service import Service

CONSOLE_PREFIXES = ("/admin/", "/api/")


class WithConsole:
    def __init__(self, site: ASGIApp, console: ASGIApp) -> None:
        self.site, self.console = site, console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path == "/admin" or path.startswith(CONSOLE_PREFIXES):
            await self.console(scope, receive, send)
        else:
            await self.site(scope, receive, send)


def with_console(site: ASGIApp, service: Service, *, dev: bool) -> tuple[ASGIApp, ASGIApp | None]:
    """(what to serve on web.host:web.port, the console to serve alone on admin.host:admin.port or None).

    admin.port 0: the console answers /admin and /api beside the subscriber pages.
    """
    from newsletter.admin.app import create_console

    console = create_console(service, dev=dev)
    if service.settings.admin.port:
        return site, console
    return WithConsole(site, console), None


def run_both(
    site: ASGIApp, console: ASGIApp, *, site_at: tuple[str, int], console_at: tuple[str, int], **options: Any
) -> None:
    """Serve the subscriber app and the console on their own listeners in one process (one event loop)."""
    import asyncio

    import uvicorn

    servers = [
        uvicorn.Server(
            uvicorn.Config(
                site, host=site_at[0], port=site_at[1], log_level="info", server_header=False, **options
            )
        ),
        uvicorn.Server(
            uvicorn.Config(
                console,
                host=console_at[0],
                port=console_at[1],
                log_level="info",
                server_header=False,
                lifespan="off",
                **options,
            )
        ),
    ]

    async def main() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(main())
