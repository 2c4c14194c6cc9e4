"""The pages a reader's personal links open: unsubscribe (with RFC 8058's one-click POST),
preferences, the lost-link Manage page, and the harmless answer to a test send's links."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.errors import InvalidAddress, SubscriberError, TokenError
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.storage.suppressions import canonical_mailbox
from newsletter.subscriptions import normalise_email, parse_topics
from newsletter.tokens import Link, Purpose
from newsletter.web.forms import BadForm, Form, read_form
from newsletter.web.site import NO_STORE, PageError, Site

log = logging.getLogger("newsletter.web")
PREFERENCE_LIMITS = {"topics": 60, "cadence": 10, "paused": 10}


class PreferencePages(Site):
    """/unsubscribe/TOKEN, /preferences/TOKEN, /manage and /manage/TOKEN."""

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
