"""The Starlette app: routes, pages and the scheduler's lifespan.

Contract (see README "Web"):
- No route changes state on GET; every change is a POST. Link scanners follow GETs.
- /subscribe and /manage answer the same page and status whatever the address's
  state: the request is one row in the mail queue (``web.mailer.MailQueue``), and a
  worker thread does the rest, so neither the page nor its timing tells whether an
  address is on the list, and a slow or dead mail relay slows no page.
- Every state-changing form POST must come from our own pages (Origin and
  Sec-Fetch-Site checked), except the RFC 8058 one-click POST.
- Every response, errors and 500s included, carries the security headers; no
  response echoes the Host header (trailing-slash redirects are relative).
- /unsubscribe/TOKEN accepts RFC 8058 one-click: a POST with no cookie, no CSRF
  token, answered 200 without a redirect, idempotent.
- Tokens are signed per purpose; a bad, expired or wrong-purpose token is a 400
  page that says what to do, and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter.scheduling.scheduler import SchedulerHandle, start_scheduler
from newsletter.service import Service
from newsletter.web.archive import ArchivePages
from newsletter.web.forms import BadForm
from newsletter.web.headers import SecuredApp
from newsletter.web.mailer import MailQueue
from newsletter.web.preferences import PreferencePages
from newsletter.web.ratelimit import RateLimits
from newsletter.web.signup import SignupInvalid, SignupPages
from newsletter.web.site import PageError

log = logging.getLogger("newsletter.web")
SLASH_REDIRECTS = ("/embed", "/manage", "/archive")  # "/manage/" -> "/manage", relative: no Host echoed


class WebApp(SignupPages, PreferencePages, ArchivePages):
    """Every page group on one Site: one mail queue, one set of rate limiters, one signer."""


def create_app(
    service: Service, *, dev: bool = False, scheduler: bool = False, limits: RateLimits | None = None
) -> Starlette:
    """The web app for one Service.

    ``dev`` marks pages as a development instance. ``scheduler`` starts
    the edition scheduler in the lifespan (``serve`` turns it on; tests leave it off);
    a bad schedule stops the app from starting. ``limits``
    overrides the rate limits. Raises TokenError at once if no secret key is set.
    """
    web = WebApp(service, dev=dev, limits=limits or RateLimits())

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return web.error_page(exc)

    async def bad_form(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadForm)
        title = "Too large" if exc.status == 413 else "We could not read that form"
        return web.error_page(
            PageError(
                exc.status,
                title,
                f"{exc.message[:1].upper()}{exc.message[1:]}. Please go back and try again.",
            )
        )

    async def signup_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignupInvalid)
        return await run_in_threadpool(
            web.signup_page, "index.html", status=400, error=exc.message, email=exc.email, chosen=exc.chosen
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if (
            exc.status_code == 404
            and request.method in ("GET", "HEAD")
            and path.endswith("/")
            and path.rstrip("/") in SLASH_REDIRECTS
        ):
            # A path-only Location: Starlette's own slash redirect would echo the Host header.
            return RedirectResponse(path.rstrip("/"), status_code=308)
        titles = {404: "Page not found", 405: "Not allowed"}
        return web.error_page(
            PageError(
                exc.status_code,
                titles.get(exc.status_code, "Error"),
                "Start again from the front page.",
                headers=dict(exc.headers or {}),
            )
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return web.error_page(PageError(500, "Something went wrong", "Please try again in a few minutes."))

    routes = [
        Route("/", web.index, methods=["GET"]),
        Route("/embed", web.embed, methods=["GET"]),
        Route("/subscribe", web.subscribe, methods=["POST"]),
        Route("/confirm/{token}", web.confirm, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", web.unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", web.preferences, methods=["GET", "POST"]),
        Route("/manage", web.manage, methods=["GET", "POST"]),
        Route("/manage/{token}", web.manage_link, methods=["GET", "POST"]),
        Route("/archive", web.archive, methods=["GET"]),
        Route("/archive/{variant_id:int}", web.archive_item, methods=["GET"]),
        Route("/static/site.css", web.stylesheet, methods=["GET"]),
    ]
    # Provider bounce and complaint webhooks (SES, Postmark, Mailgun, SendGrid);
    # each answers 404 until configured.
    from newsletter.web.webhooks import webhook_routes

    routes += webhook_routes(service)
    app = SecuredApp(
        routes=routes,
        exception_handlers={
            PageError: page_error,
            BadForm: bad_form,
            SignupInvalid: signup_invalid,
            HTTPException: http_error,
            500: server_error,
        },
        lifespan=_lifespan(service, scheduler, web.queue),
    )
    app.router.redirect_slashes = False  # its redirect is absolute, built from the Host header
    return app


def _lifespan(
    service: Service, scheduler: bool, queue: MailQueue
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        running = _start_scheduler(service) if scheduler else None
        app.state.scheduler = running  # the operator console and tests read its next fire times
        queue.start()  # confirmation and manage mails, off the request path
        app.state.mail_queue = queue
        try:
            yield
        finally:
            queue.stop()
            if running is not None:
                running.shutdown()
                log.info("scheduler stopped")

    return lifespan


def _start_scheduler(service: Service) -> SchedulerHandle:
    running = start_scheduler(service)
    log.info("scheduler started")
    return running
