"""Operator preview: what one subscriber would get now, rendered but not sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from newsletter.content.planner import Selection
from newsletter.content.render import ESCAPED_PERCENTS, PREFERENCES_MARK, RECIPIENT_MARK, UNSUBSCRIBE_MARK
from newsletter.delivery.message import PreparedMessage
from newsletter.editions.runner import EditionRunner
from newsletter.errors import SubscriberError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscriptions import normalise_email
from newsletter.tokens import Purpose


@dataclass(frozen=True)
class Preview:
    subscriber: Subscriber
    selection: Selection
    subject: str
    html: str  # personalised, as the subscriber would see it ("" when nothing is new)
    text: str
    message: bytes  # the full message as it would go on the wire


def render_preview(runner: EditionRunner, *, email: str | None = None) -> Preview:
    """Render the digest one subscriber (default: the first active one) would get now."""
    store = runner.store
    if email:
        subscriber = store.subscribers.find_subscriber(normalise_email(email))
        if subscriber is None:
            raise SubscriberError(f"{email} is not a subscriber", hint="'newsletter subscribers list' shows them.")
    else:
        subscriber = next(iter(store.subscribers.list_subscribers(status=SubscriberStatus.ACTIVE)), None)
        if subscriber is None:
            raise SubscriberError("there are no active subscribers to preview for", hint="Add one with 'newsletter subscribers add EMAIL'.")
    planned = runner.plan([subscriber])[0]
    if not planned.selection.reports:
        return Preview(subscriber, planned.selection, "", "", "", b"")
    digest = runner.renderer.render(planned.selection.reports, archive_url="")
    base = runner.settings.site.base_url.rstrip("/")
    unsubscribe = f"{base}/unsubscribe/{runner.signer.make(Purpose.UNSUBSCRIBE, subscriber.id)}"
    preferences = f"{base}/preferences/{runner.signer.make(Purpose.PREFERENCES, subscriber.id)}"

    def personalise(body: str) -> str:
        personal = body.replace(UNSUBSCRIBE_MARK, unsubscribe).replace(PREFERENCES_MARK, preferences).replace(RECIPIENT_MARK, subscriber.email)
        return personal.replace(ESCAPED_PERCENTS, "%%")

    mail = runner.settings.mail
    message = PreparedMessage(
        from_name=mail.from_name, from_address=mail.from_address, subject=digest.subject, text=digest.text, html=digest.html, list_id=mail.list_id, reply_to=mail.reply_to
    ).for_recipient(
        to_address=subscriber.email,
        to_name=subscriber.name,
        message_id=f"<preview@{mail.from_address.rsplit('@', 1)[1]}>",
        date=format_datetime(datetime.now(UTC)),
        unsubscribe_url=unsubscribe,
        preferences_url=preferences,
    )
    return Preview(subscriber, planned.selection, digest.subject, personalise(digest.html), personalise(digest.text), message)
