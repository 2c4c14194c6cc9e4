"""The console's Starlette app: pages under /admin, the API under /api/v1, errors, and the off switch."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from newsletter.admin.api import api_routes, register_api
from newsletter.admin.console import console_routes
from newsletter.admin.context import Console, NeedsLogin, Refused
from newsletter.admin.security import console_headers
from newsletter.errors import NewsletterError
from newsletter.service import Service
from newsletter.web.headers import SecuredApp

log = logging.getLogger("newsletter.admin")


def create_console(service: Service, *, dev: bool = False) -> Starlette:
    """The console app (pages under /admin, the API under /api/v1) for one Service."""
    console = Console(service, dev=dev)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=exc.status)
        return console.page(
            request,
            "error.html",
            signed=None,
            status=exc.status,
            title="Refused",
            message=exc.message,
            hint=exc.hint,
        )

    async def needs_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/admin/login", status_code=303)

    async def operator_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NewsletterError)
        return await refused(request, Refused(400, exc.message, hint=exc.hint))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await refused(request, Refused(exc.status_code, exc.detail or "not found"))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("console error serving %s %s", request.method, request.url.path, exc_info=exc)
        return await refused(request, Refused(500, "something went wrong", hint="See the server log."))

    app = SecuredApp(
        routes=[*console_routes(console), *api_routes(console)],
        headers=console_headers,  # outside everything: the 500 page carries them too
        middleware=[Middleware(OffUntilUsers, console=console)],
        exception_handlers={
            Refused: refused,
            NeedsLogin: needs_login,
            NewsletterError: operator_error,
            HTTPException: http_error,
            500: server_error,
        },
    )
    register_api(app)
    app.state.console = console
    return app


class OffUntilUsers:
    """Every path is 404 until ``newsletter admin create-user`` made a first user."""

    def __init__(self, app: Any, *, console: Console) -> None:
        self.app, self.console = app, console

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not await run_in_threadpool(self.console.enabled):
            response = Response(
                "The operator console is off: create its first user with 'newsletter admin create-user EMAIL"
                " --role admin'.\n",
                status_code=404,
                media_type="text/plain",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
