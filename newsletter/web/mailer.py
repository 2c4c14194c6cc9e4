"""Transactional mail from the web app: the double opt-in confirmation and the management link.

Each mail is rendered from templates/email/{confirm,manage}.{txt,html} (Jinja2,
autoescaped HTML, CSS inlined like the digest), carries List-Unsubscribe with a
never-expiring token plus List-Unsubscribe-Post (so a provider's one-click works
on it too), and goes through the configured SMTP server with
mail.from_address as envelope sender.

At most one such mail per address per hour, whatever asks for it: the slot is
claimed in the database before sending and released if the send fails. The mails
leave the request path: requests go into ``MailQueue`` (a table), drained by a
worker thread with retries on the one retry policy (``delivery.retry``, ``web.mail_backoff``).
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2

from newsletter.config import Settings
from newsletter.content.render import inline_css
from newsletter.delivery.dkim import signer_for
from newsletter.delivery.message import make_message_id, transactional_message
from newsletter.delivery.retry import RetryPolicy
from newsletter.delivery.smtp_client import Result, SmtpConnection
from newsletter.errors import TemplateError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore
from newsletter.storage.webmail import QueuedMail, WebMailStore
from newsletter.tokens import Purpose, TokenSigner

log = logging.getLogger("newsletter.web.mail")
MAIL_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True)
class MailKind:
    template: str  # templates/email/<template>.txt and .html
    subject: str  # formatted with the site name
    purpose: Purpose  # the token the main link carries
    path: str  # the route it points at


CONFIRM = MailKind("confirm", "Confirm your subscription to {site}", Purpose.CONFIRM, "/confirm/")
MANAGE = MailKind("manage", "Your {site} subscription link", Purpose.MANAGE, "/manage/")


class Mailer:
    """Builds and sends the web app's one-off mails for one settings object."""

    def __init__(
        self,
        settings: Settings,
        env: jinja2.Environment,
        signer: TokenSigner,
        subscribers: SubscriberStore,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.env = env
        self.signer = signer
        self.subscribers = subscribers
        self.clock = clock
        self.base_url = settings.site.base_url.rstrip("/")
        self.domain = settings.mail.from_address.rsplit("@", 1)[1]
        self.dkim = signer_for(settings)  # confirmation and manage mails are signed like digests
        self.retry = RetryPolicy.from_settings(settings)

    def build(self, kind: MailKind, subscriber: Subscriber, *, now: datetime) -> bytes:
        """The complete message bytes (CRLF) for one subscriber."""
        site = self.settings.site
        unsubscribe_url = (
            f"{self.base_url}/unsubscribe/{self.signer.make(Purpose.UNSUBSCRIBE, subscriber.id)}"
        )
        context = {
            "site": site,
            "tagline": "The newest video surveillance industry reports",
            "email": subscriber.email,
            "action_url": f"{self.base_url}{kind.path}{self.signer.make(kind.purpose, subscriber.id)}",
            "unsubscribe_url": unsubscribe_url,
            "valid_days": self.signer.confirm_max_age // 86400 if kind is CONFIRM else 2,
        }
        try:
            text = self.env.get_template(f"email/{kind.template}.txt").render(context)
            html = inline_css(self.env.get_template(f"email/{kind.template}.html").render(context))
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {exc.name} is missing from {self.settings.digest.templates}"
            ) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the {kind.template} mail template failed to render: {exc}") from exc
        message = transactional_message(
            from_name=self.settings.mail.from_name,
            from_address=self.settings.mail.from_address,
            to_address=subscriber.email,
            subject=kind.subject.format(site=site.name),
            text=text,
            html=html,
            list_id=self.settings.mail.list_id,
            unsubscribe_url=unsubscribe_url,
            message_id=make_message_id(self.domain),
            date=now,
        )
        return self.dkim.signed(message) if self.dkim is not None else message

    def send(self, kind: MailKind, subscriber: Subscriber) -> MailResult:
        """Send unless this address was mailed within the hour; never raises for SMTP trouble.

        A send that failed releases its hourly slot, so a retry (or the reader asking
        again) is not held back: RETRY for a relay that is down, slow or answered 4xx,
        FAILED for a 5xx (retrying cannot help).
        """
        now = self.clock()
        claimed, previous = self.subscribers.claim_mail_slot(subscriber.id, now=now, interval=MAIL_INTERVAL)
        if not claimed:
            log.info(
                "%s mail to subscriber %d skipped: one was sent within the hour", kind.template, subscriber.id
            )
            return MailResult.SKIPPED
        try:
            data = self.build(kind, subscriber, now=now)
            connection = SmtpConnection(self.settings.smtp)
            try:
                attempt = connection.send(self.settings.mail.from_address, subscriber.email, data)
            finally:
                connection.close()
        except Exception:
            self.subscribers.release_mail_slot(subscriber.id, claimed_at=now, previous=previous)
            log.exception("%s mail to subscriber %d could not be built or sent", kind.template, subscriber.id)
            return MailResult.RETRY
        if attempt.result is Result.SENT:
            return MailResult.SENT
        self.subscribers.release_mail_slot(subscriber.id, claimed_at=now, previous=previous)
        log.warning(
            "%s mail to subscriber %d not sent: %s %s (%s)",
            kind.template,
            subscriber.id,
            attempt.code,
            attempt.reply,
            attempt.result.value,
        )
        return MailResult.FAILED if attempt.result is Result.PERMANENT else MailResult.RETRY


class MailResult(str, enum.Enum):
    SENT = "sent"
    SKIPPED = "skipped"  # one went to this subscriber within the hour, or the mailbox is at its cap
    RETRY = "retry"  # the relay was down, slow or said 4xx: try again later
    FAILED = "failed"  # the relay refused it for good (5xx)


UNCONFIRMED_CAP = 5  # confirmation mails per mailbox that nobody confirmed, ever


class MailQueue:
    """The web app's outgoing mail, off the request path (table ``web_mail_queue``).

    Requests ``submit`` a row and return; ``MailQueue.run`` (a daemon thread the app's
    lifespan starts) claims due rows, applies the signup or lost-link rules, mails, and
    deletes the row, or retries it when the retry policy says (``web.mail_backoff``). So a slow or dead relay
    never changes how fast a page answers, and a restart loses no request.
    """

    def __init__(
        self,
        mailer: Mailer,
        store: WebMailStore,
        *,
        unconfirmed_cap: int = UNCONFIRMED_CAP,
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self.mailer = mailer
        self.store = store
        self.subscribers = mailer.subscribers
        self.cap = unconfirmed_cap
        self.lease = lease
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, action: str, email: str, topics: tuple[str, ...] = ()) -> None:
        """Queue a signup or lost-link request (one INSERT) and wake the worker."""
        self.store.enqueue(action, email, topics)
        self._wake.set()

    # -- the worker ------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="web-mail-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.drain_one()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("mail queue: could not take the next request")
                worked = False
            if not worked:
                self._wake.wait(timeout=1.0)
                self._wake.clear()

    def drain_one(self) -> bool:
        """Handle the oldest due request, if any; True if there was one."""
        job = self.store.claim(lease=self.lease)
        if job is None:
            return False
        result = self.handle(job)
        when = self.mailer.retry.mail_retry_at(job.attempts + 1, self.mailer.clock())
        if result is MailResult.RETRY and when is not None:
            self.store.retry_at(job.id, when, f"relay did not take the {job.action} mail")
            log.info("mail queue: %s request %d retried at %s", job.action, job.id, when.isoformat())
        else:
            if result is MailResult.RETRY:
                log.warning(
                    "mail queue: %s request %d dropped after %d attempts",
                    job.action,
                    job.id,
                    job.attempts + 1,
                )
            self.store.done(job.id)
        return True

    def handle(self, job: QueuedMail) -> MailResult:
        if job.action == "signup":
            subscriber, _ = self.subscribers.add_subscriber(
                email=job.email, topics=job.topics, status=SubscriberStatus.PENDING
            )
            if subscriber.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
                return self.confirm(subscriber)
            if subscriber.status is SubscriberStatus.ACTIVE:
                # Already in: a management link is more useful than a second confirmation.
                return self.mailer.send(MANAGE, subscriber)
            return (
                MailResult.SKIPPED
            )  # bounced: never mail an address that bounces; an operator can reactivate it
        found = self.subscribers.find_subscriber(job.email)
        if found is not None and found.status is SubscriberStatus.ACTIVE:
            return self.mailer.send(MANAGE, found)
        if found is not None and found.status is SubscriberStatus.PENDING:
            return self.confirm(found)
        return MailResult.SKIPPED  # not on the list, or left: the same answer page, no mail

    def confirm(self, subscriber: Subscriber) -> MailResult:
        """A confirmation, unless the mailbox already had ``cap`` that nobody confirmed."""
        if not self.store.take_confirmation(subscriber.email, cap=self.cap):
            log.info(
                "confirmation to subscriber %d not sent: the mailbox has %d unconfirmed ones",
                subscriber.id,
                self.cap,
            )
            return MailResult.SKIPPED
        result = self.mailer.send(CONFIRM, subscriber)
        if result is not MailResult.SENT:
            self.store.give_back_confirmation(subscriber.email)
        return result
