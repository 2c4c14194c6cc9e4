"""Transactional mail from the web app: the double opt-in confirmation and the management link.

Each mail is rendered from templates/email/{confirm,manage}.{txt,html} (Jinja2,
autoescaped HTML, CSS inlined like the digest), carries List-Unsubscribe with a
never-expiring token plus List-Unsubscribe-Post (so a provider's one-click works
on it too), and goes through the configured SMTP server with
mail.from_address as envelope sender.

At most one such mail per address per hour, whatever asks for it: the slot is
claimed in the database before sending and released if the send fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2

from newsletter.config import Settings
from newsletter.content.render import inline_css
from newsletter.delivery.message import make_message_id, transactional_message
from newsletter.delivery.smtp_client import Attempt, Result, SmtpConnection
from newsletter.errors import TemplateError
from newsletter.models import Subscriber
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.subscribers import SubscriberStore
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

    def __init__(self, settings: Settings, env: jinja2.Environment, signer: TokenSigner, subscribers: SubscriberStore, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.env = env
        self.signer = signer
        self.subscribers = subscribers
        self.clock = clock
        self.base_url = settings.site.base_url.rstrip("/")
        self.domain = settings.mail.from_address.rsplit("@", 1)[1]

    def build(self, kind: MailKind, subscriber: Subscriber, *, now: datetime) -> bytes:
        """The complete message bytes (CRLF) for one subscriber."""
        site = self.settings.site
        unsubscribe_url = f"{self.base_url}/unsubscribe/{self.signer.make(Purpose.UNSUBSCRIBE, subscriber.id)}"
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
            raise TemplateError(f"template {exc.name} is missing from {self.settings.digest.templates}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the {kind.template} mail template failed to render: {exc}") from exc
        return transactional_message(
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

    def send(self, kind: MailKind, subscriber: Subscriber) -> Attempt | None:
        """Send unless this address was mailed within the hour; None when skipped or broken.

        Never raises for SMTP trouble (it runs after the answer page went out):
        a failed send is logged and its hourly slot released.
        """
        now = self.clock()
        claimed, previous = self.subscribers.claim_mail_slot(subscriber.id, now=now, interval=MAIL_INTERVAL)
        if not claimed:
            log.info("%s mail to subscriber %d skipped: one was sent within the hour", kind.template, subscriber.id)
            return None
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
            return None
        if attempt.result is not Result.SENT:
            self.subscribers.release_mail_slot(subscriber.id, claimed_at=now, previous=previous)
            log.warning("%s mail to subscriber %d not sent: %s %s (%s)", kind.template, subscriber.id, attempt.code, attempt.reply, attempt.result.value)
        return attempt
