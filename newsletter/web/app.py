"""The Starlette app: routes, pages and the scheduler's lifespan.

Contract (see README "Web"):
- No route changes state on GET; every change is a POST. Link scanners follow GETs.
- /subscribe and /manage answer the same page and status whatever the address's
  state, and mail (if at all) after the answer went out, so neither the page nor
  its timing tells whether an address is on the list.
- /unsubscribe/TOKEN accepts RFC 8058 one-click: a POST with no cookie, no CSRF
  token, answered 200 without a redirect, idempotent.
- Tokens are signed per purpose; a bad, expired or wrong-purpose token is a 400
  page that says what to do, and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.content.render import template_environment, web_version
from newsletter.errors import InvalidAddress, SubscriberError, TokenError
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.scheduling.scheduler import SchedulerHandle, start_scheduler
from newsletter.service import Service
from newsletter.storage.part import utcnow
from newsletter.subscriptions import normalise_email, parse_topics
from newsletter.tokens import Purpose
from newsletter.web.forms import BadForm, Form, read_form
from newsletter.web.headers import SecurityHeaders
from newsletter.web.mailer import CONFIRM, MANAGE, Mailer
from newsletter.web.ratelimit import RateLimiter, RateLimits

log = logging.getLogger("newsletter.web")
TAGLINE = "The newest video surveillance industry reports"
SIGNUP_LIMITS = {"email": 320, "topics": 60, "website": 200}
PREFERENCE_LIMITS = {"topics": 60, "cadence": 10, "paused": 10}
NO_STORE = {"Cache-Control": "no-store"}  # pages reached through personal links


class PageError(Exception):
    """Shown to the reader as an error page with this status."""

    def __init__(self, status: int, title: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


class WebApp:
    """The handlers, bound to one Service. Blocking work runs in Starlette's thread pool."""

    def __init__(self, service: Service, *, dev: bool, limits: RateLimits) -> None:
        self.service = service
        self.settings = service.settings
        self.dev = dev
        self.env = template_environment(self.settings.digest.templates)
        self.signer = service.signer  # fails now, not on the first request, if no key is set
        self.mailer = Mailer(self.settings, self.env, self.signer, service.store.subscribers, clock=service.clock or utcnow)
        self.per_client = RateLimiter(limits.per_client)
        self.per_target = RateLimiter(limits.per_target)
        self.base_url = self.settings.site.base_url.rstrip("/")
        self.css = self.env.get_template("web/site.css").render(site=self.settings.site)

    # -- rendering --------------------------------------------------------------

    def page(self, name: str, *, status: int = 200, headers: dict[str, str] | None = None, background: BackgroundTask | None = None, **context: Any) -> HTMLResponse:
        html = self.env.get_template(f"web/{name}").render(site=self.settings.site, tagline=TAGLINE, dev=self.dev, **context)
        return HTMLResponse(html, status_code=status, headers=headers, background=background)

    def error_page(self, exc: PageError) -> HTMLResponse:
        return self.page("error.html", status=exc.status, headers={**NO_STORE, **exc.headers}, title=exc.title, message=exc.message)

    def signup_page(self, name: str, *, status: int = 200, error: str = "", email: str = "", chosen: tuple[str, ...] = ()) -> HTMLResponse:
        topics = self.service.store.reports.all_topics()
        return self.page(name, status=status, title="Subscribe", topics=topics, chosen=chosen, error=error, email=email)

    # -- guards -------------------------------------------------------------------

    def limit(self, limiter: RateLimiter, key: str) -> None:
        wait = limiter.hit(key)
        if wait:
            raise PageError(
                429,
                "Too many requests",
                f"We received too many requests like this one. Please try again in about {int(wait // 60) + 1} minutes.",
                headers={"Retry-After": str(int(wait) + 1)},
            )

    def client_key(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def subscriber_for(self, purpose: Purpose, token: str) -> Subscriber:
        """The subscriber a token names; PageError 400 (changing nothing) if it is bad."""
        try:
            subscriber_id = self.signer.read(purpose, token)
        except TokenError as exc:
            raise PageError(400, "This link does not work", f"{exc.message[:1].upper()}{exc.message[1:]}. {self.what_to_do(purpose)}") from exc
        subscriber = self.service.store.subscribers.get_subscriber(subscriber_id)
        if subscriber is None:
            raise PageError(400, "This link does not work", f"The address it was made for is no longer on our list. {self.what_to_do(purpose)}")
        return subscriber

    @staticmethod
    def what_to_do(purpose: Purpose) -> str:
        if purpose is Purpose.CONFIRM:
            return "Sign up again on the front page and we will send a fresh confirmation link."
        return "Ask for a new link on the Manage page: enter your address and we will mail you one."

    # -- signup -------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return await run_in_threadpool(self.signup_page, "index.html")

    async def embed(self, request: Request) -> Response:
        return await run_in_threadpool(self.signup_page, "embed.html")

    async def subscribe(self, request: Request) -> Response:
        self.limit(self.per_client, self.client_key(request))
        form = await read_form(request, SIGNUP_LIMITS)
        if form.get("website"):
            # A person never sees the honeypot field; answer as usual and do nothing.
            log.info("signup dropped: honeypot filled")
            return self.page("subscribed.html", title="Check your inbox")
        email, topics = await run_in_threadpool(self.checked_signup, form)
        self.limit(self.per_target, "mail:" + email)
        # The mail goes out after the answer: same page, same timing for every address.
        return self.page("subscribed.html", title="Check your inbox", background=BackgroundTask(self.signup_mail, email, topics))

    def checked_signup(self, form: Form) -> tuple[str, tuple[str, ...]]:
        try:
            chosen = parse_topics(form.getlist("topics"))
        except SubscriberError as exc:
            raise BadForm(exc.message) from exc
        unknown = set(chosen) - set(self.service.store.reports.all_topics())
        if unknown:
            raise BadForm("unknown topic chosen")
        try:
            return normalise_email(form.get("email")), chosen
        except InvalidAddress as exc:
            raise SignupInvalid(exc.message, email=form.get("email"), chosen=chosen) from exc

    def signup_mail(self, email: str, topics: tuple[str, ...]) -> None:
        store = self.service.store
        subscriber, _created = store.subscribers.add_subscriber(email=email, topics=topics, status=SubscriberStatus.PENDING)
        if subscriber.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
            self.mailer.send(CONFIRM, subscriber)
        elif subscriber.status is SubscriberStatus.ACTIVE:
            # Already in: a management link is more useful than a second confirmation.
            self.mailer.send(MANAGE, subscriber)
        # Bounced: never mail an address that bounces; an operator can reactivate it.

    # -- confirm ------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(self.subscriber_for, Purpose.CONFIRM, token)
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            return self.page("confirm.html", headers=NO_STORE, title="Confirm your subscription", email=subscriber.email, action=f"/confirm/{token}")
        await read_form(request, {})
        if subscriber.status is SubscriberStatus.BOUNCED:
            raise PageError(409, "We cannot mail this address", "Mail to this address has bounced, so we stopped sending to it. Contact us to have it checked.")
        if subscriber.status is SubscriberStatus.UNSUBSCRIBED and subscriber.updated_at is not None:
            # A confirmation made before the reader left must not bring them back: only a
            # new signup (which mails a new link) can.
            if self.signer.issued_at(Purpose.CONFIRM, token) < subscriber.updated_at.replace(microsecond=0):
                raise PageError(400, "This link is older than your unsubscribe", "You left after this link was sent, so it no longer subscribes you. To come back, sign up again on the front page.")
        if subscriber.status is not SubscriberStatus.ACTIVE:
            await run_in_threadpool(self.service.store.subscribers.set_status, subscriber.id, SubscriberStatus.ACTIVE, reason="confirmed on the web")
        return self.page(
            "confirmed.html", headers=NO_STORE, title="You are subscribed", email=subscriber.email,
            preferences_url=f"/preferences/{self.signer.make(Purpose.PREFERENCES, subscriber.id)}",
        )

    # -- unsubscribe -------------------------------------------------------------

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            subscriber = await run_in_threadpool(self.subscriber_for, Purpose.UNSUBSCRIBE, token)
            return self.page(
                "unsubscribe.html", headers=NO_STORE, title="Unsubscribe", email=subscriber.email, action=f"/unsubscribe/{token}",
                preferences_url=f"/preferences/{self.signer.make(Purpose.PREFERENCES, subscriber.id)}",
                already=subscriber.status is not SubscriberStatus.ACTIVE and subscriber.status is not SubscriberStatus.PENDING,
            )
        form = await read_form(request, {"List-Unsubscribe": 20})
        try:
            subscriber_id = self.signer.read(Purpose.UNSUBSCRIBE, token)
        except TokenError as exc:
            raise PageError(400, "This link does not work", f"{exc.message[:1].upper()}{exc.message[1:]}. {self.what_to_do(Purpose.UNSUBSCRIBE)}") from exc
        how = "one-click unsubscribe" if form.get("List-Unsubscribe") == "One-Click" else "unsubscribed on the web"
        await run_in_threadpool(self.unsubscribe_now, subscriber_id, how)
        # RFC 8058: answer the POST itself (200), never redirect; a repeat is harmless.
        return self.page("unsubscribed.html", headers=NO_STORE, title="You are unsubscribed")

    def unsubscribe_now(self, subscriber_id: int, how: str) -> None:
        subscriber = self.service.store.subscribers.get_subscriber(subscriber_id)
        # A deleted or bounced subscriber gets no more mail anyway; nothing to change.
        if subscriber is not None and subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            self.service.store.subscribers.set_status(subscriber_id, SubscriberStatus.UNSUBSCRIBED, reason=how)
            log.info("subscriber %d unsubscribed (%s)", subscriber_id, how)

    # -- preferences ---------------------------------------------------------------

    async def preferences(self, request: Request) -> Response:
        return await self.preferences_for(request, Purpose.PREFERENCES, "/preferences/")

    async def manage_link(self, request: Request) -> Response:
        return await self.preferences_for(request, Purpose.MANAGE, "/manage/")

    async def preferences_for(self, request: Request, purpose: Purpose, prefix: str) -> Response:
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(self.subscriber_for, purpose, token)
        saved = False
        if request.method == "POST":
            form = await read_form(request, PREFERENCE_LIMITS)
            subscriber = await run_in_threadpool(self.save_preferences, subscriber, form)
            saved = True
        topics = sorted(set(await run_in_threadpool(self.service.store.reports.all_topics)) | set(subscriber.topics))
        return self.page(
            "preferences.html", headers=NO_STORE, title="Your preferences", subscriber=subscriber, topics=topics,
            cadences=[c.value for c in Cadence], action=f"{prefix}{token}", saved=saved,
            unsubscribe_url=f"/unsubscribe/{self.signer.make(Purpose.UNSUBSCRIBE, subscriber.id)}",
        )

    def save_preferences(self, subscriber: Subscriber, form: Form) -> Subscriber:
        try:
            topics = parse_topics(form.getlist("topics"))
        except SubscriberError as exc:
            raise BadForm(exc.message) from exc
        allowed = set(self.service.store.reports.all_topics()) | set(subscriber.topics)
        if set(topics) - allowed:
            raise BadForm("unknown topic chosen")
        try:
            cadence = Cadence(form.get("cadence") or subscriber.cadence.value)
        except ValueError as exc:
            raise BadForm("cadence must be daily or weekly") from exc
        paused = form.get("paused") in ("1", "on", "yes", "true")
        self.service.store.subscribers.update_preferences(subscriber.id, topics=topics, cadence=cadence, paused=paused)
        fresh = self.service.store.subscribers.get_subscriber(subscriber.id)
        assert fresh is not None
        return fresh

    # -- lost link -----------------------------------------------------------------

    async def manage(self, request: Request) -> Response:
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            return self.page("manage.html", title="Manage your subscription", error="", email="")
        self.limit(self.per_client, self.client_key(request))
        form = await read_form(request, {"email": 320, "website": 200})
        if form.get("website"):
            log.info("manage request dropped: honeypot filled")
            return self.page("manage_sent.html", title="Check your inbox")
        try:
            email = normalise_email(form.get("email"))
        except InvalidAddress as exc:
            return self.page("manage.html", status=400, title="Manage your subscription", error=exc.message, email=form.get("email"))
        self.limit(self.per_target, "mail:" + email)
        return self.page("manage_sent.html", title="Check your inbox", background=BackgroundTask(self.manage_mail, email))

    def manage_mail(self, email: str) -> None:
        subscriber = self.service.store.subscribers.find_subscriber(email)
        if subscriber is None:
            return
        if subscriber.status is SubscriberStatus.ACTIVE:
            self.mailer.send(MANAGE, subscriber)
        elif subscriber.status is SubscriberStatus.PENDING:
            self.mailer.send(CONFIRM, subscriber)

    # -- archive -------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        entries = await run_in_threadpool(self.service.store.editions.archive_entries)
        return self.page("archive.html", title="Archive", entries=entries)

    async def archive_item(self, request: Request) -> Response:
        html = await run_in_threadpool(self.service.store.editions.published_variant_html, request.path_params["variant_id"])
        if html is None:
            raise PageError(404, "Not in the archive", "There is no published digest at this address. The archive lists every one.")
        return HTMLResponse(web_version(html, manage_url=f"{self.base_url}/manage"))

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


class SignupInvalid(Exception):
    """The signup address is not valid: the form is shown again with the reason (400)."""

    def __init__(self, message: str, *, email: str, chosen: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message, self.email, self.chosen = message, email, chosen


def create_app(service: Service, *, dev: bool = False, scheduler: bool = False, limits: RateLimits | None = None) -> Starlette:
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
        return web.error_page(PageError(exc.status, title, f"{exc.message[:1].upper()}{exc.message[1:]}. Please go back and try again."))

    async def signup_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignupInvalid)
        return await run_in_threadpool(web.signup_page, "index.html", status=400, error=exc.message, email=exc.email, chosen=exc.chosen)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Page not found", 405: "Not allowed"}
        return web.error_page(PageError(exc.status_code, titles.get(exc.status_code, "Error"), "Start again from the front page.", headers=dict(exc.headers or {})))

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
    # Provider bounce and complaint webhooks (SES, Postmark, Mailgun, SendGrid); each answers 404 until configured.
    from newsletter.web.webhooks import webhook_routes

    routes += webhook_routes(service)
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            PageError: page_error,
            BadForm: bad_form,
            SignupInvalid: signup_invalid,
            HTTPException: http_error,
            500: server_error,
        },
        lifespan=_lifespan(service, scheduler),
    )


def _lifespan(service: Service, scheduler: bool) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        running = _start_scheduler(service) if scheduler else None
        app.state.scheduler = running  # the operator console and tests read its next fire times
        try:
            yield
        finally:
            if running is not None:
                # On the loop thread: an asyncio scheduler's timer may only be touched from its loop.
                running.shutdown()
                log.info("scheduler stopped")

    return lifespan


def _start_scheduler(service: Service) -> SchedulerHandle:
    running = start_scheduler(service)
    log.info("scheduler started")
    return running
