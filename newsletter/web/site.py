"""What every page of the site shares: rendering, the error page and the guards.

``Site`` holds one Service's templates, token signer, mail queue and rate limiters; the
page groups (``web.signup``, ``web.preferences``, ``web.archive``) build on it and
``web.app`` joins them into the one object its routes call. ``PageError`` is how any
handler answers with an error page.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.content.render import template_environment
from newsletter.errors import TokenError
from newsletter.models import Subscriber
from newsletter.service import Service
from newsletter.storage.part import utcnow
from newsletter.tokens import Link, Purpose
from newsletter.web.mailer import Mailer, MailQueue
from newsletter.web.ratelimit import RateLimiter, RateLimits, client_key, open_storage

log = logging.getLogger("newsletter.web")
TAGLINE = "The newest video surveillance industry reports"
NO_STORE = {"Cache-Control": "no-store"}  # pages reached through personal links


class PageError(Exception):
    """Shown to the reader as an error page with this status."""

    def __init__(
        self, status: int, title: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


class Site:
    """The handlers' shared state, bound to one Service. Blocking work runs in Starlette's thread pool."""

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

    # -- guards -------------------------------------------------------------------

    def limit(self, limiter: RateLimiter, key: str) -> None:
        wait = limiter.hit(key)
        if wait:
            raise PageError(
                429,
                "Too many requests",
                "We received too many requests like this one. "
                f"Please try again in about {int(wait // 60) + 1} minutes.",
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
                "For your safety we only accept this form from our own pages. "
                "Open the page from our site and send it again.",
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
