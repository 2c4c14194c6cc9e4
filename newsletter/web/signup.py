"""The signup pages: the front page, its embeddable form, the signup POST and the double opt-in
confirmation (a GET shows the page; only the POST subscribes)."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.errors import InvalidAddress, SubscriberError
from newsletter.models import SubscriberStatus
from newsletter.storage.suppressions import canonical_mailbox
from newsletter.subscriptions import normalise_email, parse_topics
from newsletter.tokens import Purpose
from newsletter.web.forms import BadForm, Form, read_form
from newsletter.web.site import NO_STORE, PageError, Site

log = logging.getLogger("newsletter.web")
SIGNUP_LIMITS = {"email": 320, "topics": 60, "website": 200}


class SignupInvalid(Exception):
    """The signup address is not valid: the form is shown again with the reason (400)."""

    def __init__(self, message: str, *, email: str, chosen: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message, self.email, self.chosen = message, email, chosen


class SignupPages(Site):
    """/, /embed, /subscribe and /confirm/TOKEN."""

    def signup_page(
        self, name: str, *, status: int = 200, error: str = "", email: str = "", chosen: tuple[str, ...] = ()
    ) -> HTMLResponse:
        topics = self.service.store.reports.all_topics()
        return self.page(
            name, status=status, title="Subscribe", topics=topics, chosen=chosen, error=error, email=email
        )

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
                "Mail to this address has bounced, so we stopped sending to it. "
                "Contact us to have it checked.",
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
                    "You left after this link was sent, so it no longer subscribes you. "
                    "To come back, sign up again on the front page.",
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
