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
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.content.render import template_environment, web_version
from newsletter.errors import InvalidAddress, SubscriberError, TokenError
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.scheduling.scheduler import SchedulerHandle, start_scheduler
from newsletter.service import Service
from newsletter.storage.part import utcnow
from newsletter.storage.suppressions import canonical_mailbox
from newsletter.subscriptions import normalise_email, parse_topics
from newsletter.tokens import Link, Purpose
from newsletter.web.forms import BadForm, Form, read_form
from newsletter.web.headers import SecuredApp
from newsletter.web.mailer import Mailer, MailQueue
from newsletter.web.ratelimit import RateLimiter, RateLimits, client_key, open_storage

log = logging.getLogger("newsletter.web")
TAGLINE = "The newest video surveillance industry reports"
SIGNUP_LIMITS = {"email": 320, "topics": 60, "website": 200}
PREFERENCE_LIMITS = {"topics": 60, "cadence": 10, "paused": 10}
NO_STORE = {"Cache-Control": "no-store"}  # pages reached through personal links
MAX_DB_INT = 2**63 - 1  # larger path ids cannot name a row (and overflow the driver)
SLASH_REDIRECTS = ("/embed", "/manage", "/archive")  # "/manage/" -> "/manage", relative: no Host echoed


class PageError(Exception):
    """Shown to the reader as an error page with this status."""

    def __init__(
        self, status: int, title: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
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
        self.mailer = Mailer(
            self.settings, self.env, self.signer, service.store.subscribers, clock=service.clock or utcnow
        )
        self.queue = MailQueue(
            self.mailer, service.store.webmail, unconfirmed_cap=self.settings.web.max_unconfirmed
        )
        storage = open_storage(self.settings.web.rate_limit_storage)
        self.per_client = RateLimiter(limits.per_client, storage=storage, namespace="client")
        self.per_target = RateLimiter(limits.per_target, storage=storage, namespace="mailbox")
        self.base_url = self.settings.site.base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.css = self.env.get_template("web/site.css").render(site=self.settings.site)

    # -- rendering --------------------------------------------------------------

    def page(
        self,
        name: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(f"web/{name}").render(
            site=self.settings.site, tagline=TAGLINE, dev=self.dev, **context
        )
        return HTMLResponse(html, status_code=status, headers=headers, background=background)

    def error_page(self, exc: PageError) -> HTMLResponse:
        return self.page(
            "error.html",
            status=exc.status,
            headers={**NO_STORE, **exc.headers},
            title=exc.title,
            message=exc.message,
        )

    def signup_page(
        self, name: str, *, status: int = 200, error: str = "", email: str = "", chosen: tuple[str, ...] = ()
    ) -> HTMLResponse:
        topics = self.service.store.reports.all_topics()
        return self.page(
            name, status=status, title="Subscribe", topics=topics, chosen=chosen, error=error, email=email
        )

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
        """The client's network. uvicorn has already replaced the peer by X-Forwarded-For
        only when the peer is one of web.trusted_proxies (none by default)."""
        return client_key(request.client.host if request.client else None)

    def check_origin(self, request: Request) -> None:
        """Refuse (403) a form POST that another site's page made (CSRF).

        Browsers say where a request comes from with Sec-Fetch-Site: only "same-origin"
        (or "none", typed by the user) passes. Without it (older browsers), a foreign or
        "null" Origin is refused. (Sec-Fetch-Site decides first because our
        Referrer-Policy no-referrer makes Chrome send "Origin: null" even from our own
        pages.) A client that sends neither (curl) is let through. ``--dev`` also
        accepts the address it is served from.
        """
        fetch_site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if fetch_site is not None:
            refused = fetch_site not in ("same-origin", "none")
        elif origin is not None:
            allowed = {self.origin}
            if self.dev:
                allowed.add(f"{request.url.scheme}://{request.headers.get('host', '')}")
            refused = origin not in allowed
        else:
            refused = False
        if refused:
            raise PageError(
                403,
                "This form came from another site",
                "For your safety we only accept this form from our own pages. Open the page from our site and send it again.",
            )

    def linked(self, purpose: Purpose, token: str) -> tuple[Subscriber, Link]:
        """The subscriber a token names, and the token; PageError 400 (changing nothing) if it is bad.

        A legacy (id-only) token names only a reader who existed when identities were
        made unique: for anyone later it names nobody, whatever id it carries.
        """
        try:
            link = self.signer.read_link(purpose, token)
        except TokenError as exc:
            raise PageError(
                400,
                "This link does not work",
                f"{exc.message[:1].upper()}{exc.message[1:]}. {self.what_to_do(purpose)}",
            ) from exc
        subscriber = self.owner(link)
        if subscriber is None:
            raise PageError(
                400,
                "This link does not work",
                f"The address it was made for is no longer on our list. {self.what_to_do(purpose)}",
            )
        return subscriber, link

    def owner(self, link: Link) -> Subscriber | None:
        """The subscriber a checked token belongs to, or None (removed, or a legacy link of a later id)."""
        subscribers = self.service.store.subscribers
        subscriber = subscribers.get_subscriber(link.subscriber_id)
        if subscriber is None or (link.legacy and not subscribers.honours_legacy_links(subscriber.id)):
            return None
        return subscriber

    def subscriber_for(self, purpose: Purpose, token: str) -> Subscriber:
        return self.linked(purpose, token)[0]

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
        self.check_origin(request)
        self.limit(self.per_client, self.client_key(request))
        form = await read_form(request, SIGNUP_LIMITS)
        if form.get("website"):
            # A person never sees the honeypot field; answer as usual and do nothing.
            log.info("signup dropped: honeypot filled")
            return self.page("subscribed.html", title="Check your inbox")
        email, topics = await run_in_threadpool(self.checked_signup, form)
        # Keyed by the inbox, not the spelling: plus-tags and Gmail dots reach one person.
        self.limit(self.per_target, "mail:" + canonical_mailbox(email))
        # One INSERT for every address; the queue's worker decides and mails: same page, same timing.
        await run_in_threadpool(self.queue.submit, "signup", email, topics)
        return self.page("subscribed.html", title="Check your inbox")

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

    # -- confirm ------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber, link = await run_in_threadpool(self.linked, Purpose.CONFIRM, token)
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            return self.page(
                "confirm.html",
                headers=NO_STORE,
                title="Confirm your subscription",
                email=subscriber.email,
                action=f"/confirm/{token}",
            )
        self.check_origin(request)
        await read_form(request, {})
        if subscriber.status is SubscriberStatus.BOUNCED:
            raise PageError(
                409,
                "We cannot mail this address",
                "Mail to this address has bounced, so we stopped sending to it. Contact us to have it checked.",
            )
        if subscriber.status is SubscriberStatus.UNSUBSCRIBED and subscriber.updated_at is not None:
            # A confirmation made before the reader left must not bring them back: only a
            # new signup (which mails a new link) can. Exact times: a link made in the same
            # second as the unsubscribe, but before it, is older too.
            assert link.issued_at is not None
            if link.issued_at < subscriber.updated_at:
                raise PageError(
                    400,
                    "This link is older than your unsubscribe",
                    "You left after this link was sent, so it no longer subscribes you. To come back, sign up again on the front page.",
                )
        if subscriber.status is not SubscriberStatus.ACTIVE:
            # The reader's own confirmation: the one way (besides an operator) off the suppression list.
            await run_in_threadpool(
                self.service.store.subscribers.set_status,
                subscriber.id,
                SubscriberStatus.ACTIVE,
                reason="confirmed on the web",
            )
        await run_in_threadpool(self.service.store.webmail.confirmed, subscriber.email)
        return self.page(
            "confirmed.html",
            headers=NO_STORE,
            title="You are subscribed",
            email=subscriber.email,
            preferences_url=f"/preferences/{self.signer.make(Purpose.PREFERENCES, subscriber.id)}",
        )

    # -- unsubscribe -------------------------------------------------------------

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        if self.signer.is_test(token):
            return self.test_link_page("unsubscribe")
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            subscriber = await run_in_threadpool(self.subscriber_for, Purpose.UNSUBSCRIBE, token)
            return self.page(
                "unsubscribe.html",
                headers=NO_STORE,
                title="Unsubscribe",
                email=subscriber.email,
                action=f"/unsubscribe/{token}",
                preferences_url=f"/preferences/{self.signer.make(Purpose.PREFERENCES, subscriber.id)}",
                already=subscriber.status is not SubscriberStatus.ACTIVE
                and subscriber.status is not SubscriberStatus.PENDING,
            )
        form = await read_form(request, {"List-Unsubscribe": 20})
        one_click = form.get("List-Unsubscribe") == "One-Click"
        if not one_click:  # RFC 8058's one-click comes from the mailbox provider's servers, not our pages
            self.check_origin(request)
        try:
            link = self.signer.read_link(Purpose.UNSUBSCRIBE, token)
        except TokenError as exc:
            raise PageError(
                400,
                "This link does not work",
                f"{exc.message[:1].upper()}{exc.message[1:]}. {self.what_to_do(Purpose.UNSUBSCRIBE)}",
            ) from exc
        how = "one-click unsubscribe" if one_click else "unsubscribed on the web"
        await run_in_threadpool(self.unsubscribe_now, link, how)
        # RFC 8058: answer the POST itself (200), never redirect; a repeat is harmless.
        return self.page("unsubscribed.html", headers=NO_STORE, title="You are unsubscribed")

    def unsubscribe_now(self, link: Link, how: str) -> None:
        subscriber = self.owner(link)
        # A deleted or bounced subscriber gets no more mail anyway, and a legacy link of a
        # reused id names nobody: nothing to change.
        if subscriber is not None and subscriber.status in (
            SubscriberStatus.ACTIVE,
            SubscriberStatus.PENDING,
        ):
            self.service.store.subscribers.set_status(
                subscriber.id, SubscriberStatus.UNSUBSCRIBED, reason=how
            )
            log.info("subscriber %d unsubscribed (%s)", subscriber.id, how)

    # -- preferences ---------------------------------------------------------------

    async def preferences(self, request: Request) -> Response:
        if self.signer.is_test(request.path_params["token"]):
            return self.test_link_page("preferences")
        return await self.preferences_for(request, Purpose.PREFERENCES, "/preferences/")

    def test_link_page(self, kind: str) -> HTMLResponse:
        """A test send's personal link, for any method: 200 and nothing changes (RFC 8058's one-click
        POST too, so a mailbox provider's unsubscribe button on a test answers as for a real digest)."""
        return self.page("test_link.html", headers=NO_STORE, title="A test link", kind=kind)

    async def manage_link(self, request: Request) -> Response:
        return await self.preferences_for(request, Purpose.MANAGE, "/manage/")

    async def preferences_for(self, request: Request, purpose: Purpose, prefix: str) -> Response:
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(self.subscriber_for, purpose, token)
        saved = False
        if request.method == "POST":
            self.check_origin(request)
            form = await read_form(request, PREFERENCE_LIMITS)
            subscriber = await run_in_threadpool(self.save_preferences, subscriber, form)
            saved = True
        topics = sorted(
            set(await run_in_threadpool(self.service.store.reports.all_topics)) | set(subscriber.topics)
        )
        return self.page(
            "preferences.html",
            headers=NO_STORE,
            title="Your preferences",
            subscriber=subscriber,
            topics=topics,
            cadences=[c.value for c in Cadence],
            action=f"{prefix}{token}",
            saved=saved,
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
        self.service.store.subscribers.update_preferences(
            subscriber.id, topics=topics, cadence=cadence, paused=paused
        )
        fresh = self.service.store.subscribers.get_subscriber(subscriber.id)
        assert fresh is not None
        return fresh

    # -- lost link -----------------------------------------------------------------

    async def manage(self, request: Request) -> Response:
        if request.method != "POST":  # GET and HEAD (link scanners send both) only show the page
            return self.page("manage.html", title="Manage your subscription", error="", email="")
        self.check_origin(request)
        self.limit(self.per_client, self.client_key(request))
        form = await read_form(request, {"email": 320, "website": 200})
        if form.get("website"):
            log.info("manage request dropped: honeypot filled")
            return self.page("manage_sent.html", title="Check your inbox")
        try:
            email = normalise_email(form.get("email"))
        except InvalidAddress as exc:
            return self.page(
                "manage.html",
                status=400,
                title="Manage your subscription",
                error=exc.message,
                email=form.get("email"),
            )
        self.limit(self.per_target, "mail:" + canonical_mailbox(email))
        await run_in_threadpool(self.queue.submit, "manage", email)
        return self.page("manage_sent.html", title="Check your inbox")

    # -- archive -------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        entries = await run_in_threadpool(self.service.store.editions.archive_entries)
        return self.page("archive.html", title="Archive", entries=entries)

    async def archive_item(self, request: Request) -> Response:
        variant_id = request.path_params["variant_id"]
        html = (
            None
            if variant_id > MAX_DB_INT
            else await run_in_threadpool(self.service.store.editions.published_variant_html, variant_id)
        )
        if html is None:
            raise PageError(
                404,
                "Not in the archive",
                "There is no published digest at this address. The archive lists every one.",
            )
        return HTMLResponse(web_version(html, manage_url=f"{self.base_url}/manage"))

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


class SignupInvalid(Exception):
    """The signup address is not valid: the form is shown again with the reason (400)."""

    def __init__(self, message: str, *, email: str, chosen: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message, self.email, self.chosen = message, email, chosen


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
    # Provider bounce and complaint webhooks (SES, Postmark, Mailgun, SendGrid); each answers 404 until configured.
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
