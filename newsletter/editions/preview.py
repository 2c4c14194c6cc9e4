"""Operator preview: what one subscriber would get now, rendered but not sent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from newsletter.content.planner import Selection
from newsletter.content.render import ESCAPED_PERCENTS, PREFERENCES_MARK, RECIPIENT_MARK, UNSUBSCRIBE_MARK
from newsletter.delivery.message import PreparedMessage, make_message_id, transactional_message
from newsletter.delivery.smtp_client import Result, SmtpConnection
from newsletter.editions.runner import EditionRunner
from newsletter.errors import EditionError, SubscriberError
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
            raise SubscriberError(
                f"{email} is not a subscriber", hint="'newsletter subscribers list' shows them."
            )
    else:
        subscriber = next(iter(store.subscribers.list_subscribers(status=SubscriberStatus.ACTIVE)), None)
        if subscriber is None:
            raise SubscriberError(
                "there are no active subscribers to preview for",
                hint="Add one with 'newsletter subscribers add EMAIL'.",
            )
    planned = runner.plan([subscriber])[0]
    if not planned.selection.reports:
        return Preview(subscriber, planned.selection, "", "", "", b"")
    digest = runner.renderer.render(planned.selection.reports, archive_url="")
    base = runner.settings.site.base_url.rstrip("/")
    unsubscribe = f"{base}/unsubscribe/{runner.signer.make(Purpose.UNSUBSCRIBE, subscriber.id)}"
    preferences = f"{base}/preferences/{runner.signer.make(Purpose.PREFERENCES, subscriber.id)}"

    def personalise(body: str) -> str:
        personal = (
            body.replace(UNSUBSCRIBE_MARK, unsubscribe)
            .replace(PREFERENCES_MARK, preferences)
            .replace(RECIPIENT_MARK, subscriber.email)
        )
        return personal.replace(ESCAPED_PERCENTS, "%%")

    mail = runner.settings.mail
    message = PreparedMessage(
        from_name=mail.from_name,
        from_address=mail.from_address,
        subject=digest.subject,
        text=digest.text,
        html=digest.html,
        list_id=mail.list_id,
        reply_to=mail.reply_to,
    ).for_recipient(
        to_address=subscriber.email,
        to_name=subscriber.name,
        message_id=f"<preview@{mail.from_address.rsplit('@', 1)[1]}>",
        date=format_datetime(datetime.now(UTC)),
        unsubscribe_url=unsubscribe,
        preferences_url=preferences,
    )
    return Preview(
        subscriber,
        planned.selection,
        digest.subject,
        personalise(digest.html),
        personalise(digest.text),
        message,
    )


def send_test(runner: EditionRunner, *, to_address: str, email: str | None = None) -> Preview:
    """Mail the digest one reader (default: the first active one) would get now to ``to_address``.

    Marked "[Test]" and sent on its own: no outbox row, no ledger mark, no edition. The
    reader's personal links become the site's Manage page, so clicking around in a test
    never unsubscribes the reader. Raises EditionError when there is nothing to send or
    the server does not take it.
    """
    target = normalise_email(to_address)
    preview = render_preview(runner, email=email)
    if not preview.html:
        raise EditionError(
            f"nothing new for {preview.subscriber.email} now, so there is no digest to test",
            hint="Pick a reader whose 'newsletter preview' shows reports (--as EMAIL).",
        )
    base = runner.settings.site.base_url.rstrip("/")
    manage = f"{base}/manage"
    personal = re.compile(re.escape(base) + r"/(?:unsubscribe|preferences)/[A-Za-z0-9_.\-]+")
    mail = runner.settings.mail
    data = transactional_message(
        from_name=mail.from_name,
        from_address=mail.from_address,
        to_address=target,
        subject=f"[Test] {preview.subject}",
        text=personal.sub(manage, preview.text),
        html=personal.sub(manage, preview.html),
        list_id=mail.list_id,
        unsubscribe_url=manage,
        message_id=make_message_id(mail.from_address.rsplit("@", 1)[1]),
        date=runner.clock(),
    )
    connection = SmtpConnection(runner.settings.smtp)
    try:
        attempt = connection.send(mail.from_address, target, data)
    finally:
        connection.close()
    if attempt.result is not Result.SENT:
        raise EditionError(
            f"the SMTP server did not take the test: {attempt.code or ''} {attempt.reply}".strip(),
            hint="Check the smtp.* settings ('newsletter config').",
        )
    return preview
