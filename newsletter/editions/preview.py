"""Operator preview and test send: what one reader would get now, rendered, or mailed as a test.

Both read the feed first through the engine's one conditional fetch (``read_feed``), so
an editor previews, tests and counts from the reports a send would plan from. A test
send is the real message for that reader: the edition's builder (``edition_message``),
signed with every configured DKIM key after the same key check as a send
(``ready_signer``), with a VERP envelope sender. Only its subject is marked "[Test]"
and its personal links and envelope carry test tokens (``Purpose.TEST``), which no
other purpose reads: a one-click POST to a test link answers 200 and changes nothing,
and a bounce of a test names no outbox row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from newsletter.content.planner import Selection
from newsletter.content.render import ESCAPED_PERCENTS, PREFERENCES_MARK, RECIPIENT_MARK, UNSUBSCRIBE_MARK
from newsletter.delivery.dnscheck import ready_signer
from newsletter.delivery.message import edition_message, envelope_sender, make_message_id
from newsletter.delivery.smtp_client import Result, SmtpConnection, helo_name
from newsletter.editions.runner import EditionRunner
from newsletter.errors import EditionError, FeedError, SubscriberError
from newsletter.models import Report, Subscriber, SubscriberStatus
from newsletter.storage.reports import FUTURE_TOLERANCE
from newsletter.subscriptions import normalise_email
from newsletter.tokens import Purpose

log = logging.getLogger("newsletter.editions.preview")
LAST_SEQ = 2**31 - 1  # above any stored report's seq (an INTEGER column on PostgreSQL too)


@dataclass(frozen=True)
class HeldBack:
    """Stored reports no edition may plan yet: the settle window (``reports.settle``) holds them."""

    reports: tuple[Report, ...] = ()
    until: datetime | None = None  # when the last of them is released (UTC)

    def __str__(self) -> str:
        if not self.reports:
            return ""
        count = len(self.reports)
        noun = "report waits" if count == 1 else "reports wait"
        when = f" until {self.until:%Y-%m-%d %H:%M} UTC" if self.until else ""
        return f"{count} {noun} for the settle window{when}"


@dataclass(frozen=True)
class Preview:
    subscriber: Subscriber
    selection: Selection
    subject: str
    html: str  # personalised, as the subscriber would see it ("" when nothing is new)
    text: str
    message: bytes  # the full message as it would go on the wire (unsigned)
    held: HeldBack = field(default_factory=HeldBack)
    feed: str = ""  # why the feed was not read now ("" when it was)


def read_feed(runner: EditionRunner) -> str:
    """Read the feed through the engine's one conditional fetch before a preview, a test or a count.

    Returns "" when it was read, else why not (a read-only database, a feed that cannot be
    fetched): the caller shows the stored reports and says so. Nothing is raised, since an
    editor can still preview what is stored; a send fails on the same feed with the reason.
    """
    if runner.store.read_only:
        return "the database is read-only: showing the stored reports (the feed is not fetched)"
    try:
        runner.ingest()
    except FeedError as exc:
        log.warning("preview: the feed could not be read: %s", exc.message)
        return f"the feed could not be read now ({exc.message}): showing the reports stored so far"
    return ""


def held_back(runner: EditionRunner, *, as_of: datetime | None = None) -> HeldBack:
    """The stored reports the settle window keeps out of an edition planned at ``as_of``.

    Planning gives readers reports up to the settled horizon; everything stored after
    it waits until every settling report among them is older than ``reports.settle``.
    """
    as_of = as_of or runner.clock()
    settle = timedelta(seconds=runner.settings.reports.settle)
    reports = runner.store.reports
    horizon = reports.settled_horizon(as_of=as_of, settle=settle)
    waiting = tuple(reports.ledger_reports(after=horizon, upto=LAST_SEQ))
    settling = [
        r.published + settle for r in waiting if as_of - settle < r.published <= as_of + FUTURE_TOLERANCE
    ]
    return HeldBack(waiting, max(settling) if settling else None)


def render_preview(runner: EditionRunner, *, email: str | None = None, feed: str = "") -> Preview:
    """Render the digest one subscriber (default: the first active one) would get now.

    Reads stored reports only: call ``read_feed`` first (``feed`` carries its answer along).
    """
    subscriber = _reader(runner, email)
    planned = runner.plan([subscriber])[0]
    held = held_back(runner)
    if not planned.selection.reports:
        return Preview(subscriber, planned.selection, "", "", "", b"", held, feed)
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
    message = edition_message(
        mail, subject=digest.subject, text=digest.text, html=digest.html, edition_key="preview"
    ).for_recipient(
        to_address=subscriber.email,
        to_name=subscriber.name,
        message_id=f"<preview@{_domain(runner)}>",
        date=runner.clock(),
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
        held,
        feed,
    )


def send_test(
    runner: EditionRunner, *, to_address: str, email: str | None = None, fetch: bool = True
) -> Preview:
    """Mail the digest one reader (default: the first active one) would get now to ``to_address``.

    Reads the feed first (``read_feed``; not with ``fetch=False``). The real message for that
    reader, built and signed as the edition's are, marked "[Test]" and sent on its own: no
    outbox row, no ledger mark, no edition. Its unsubscribe and preferences links and its envelope
    carry test tokens, so clicking around a test (or the mailbox's one-click button)
    never changes the reader. ConfigError when a DKIM key is bad or unpublished (as a
    send); EditionError when there is nothing to send or the server does not take it.
    """
    target = normalise_email(to_address)
    dkim = ready_signer(runner.settings)  # the key check a send makes, before anything goes out
    helo_name(runner.settings.smtp)  # and the greeting check
    feed = read_feed(runner) if fetch else ""
    subscriber = _reader(runner, email)
    selection = runner.plan([subscriber])[0].selection
    if not selection.reports:
        raise EditionError(
            f"nothing new for {subscriber.email} now, so there is no digest to test",
            hint="Pick a reader whose preview shows reports ('newsletter preview --subscriber EMAIL').",
        )
    digest = runner.renderer.render(selection.reports, archive_url="")
    prepared = edition_message(
        runner.settings.mail,
        subject=f"[Test] {digest.subject}",
        text=digest.text,
        html=digest.html,
        edition_key="test",
    )
    token = runner.signer.make(Purpose.TEST, subscriber.id)
    base = runner.settings.site.base_url.rstrip("/")
    build = prepared.for_recipient if dkim is None else partial(dkim.for_recipient, prepared)
    data = build(
        to_address=target,
        to_name="",
        message_id=make_message_id(_domain(runner)),
        date=runner.clock(),
        unsubscribe_url=f"{base}/unsubscribe/{token}",
        preferences_url=f"{base}/preferences/{token}",
        dot_stuffed=True,
    )
    connection = SmtpConnection(runner.settings.smtp)
    try:
        attempt = connection.send(
            envelope_sender(runner.settings.mail, token), target, data, dot_stuffed=True
        )
    finally:
        connection.close()
    if attempt.result is not Result.SENT:
        raise EditionError(
            f"the SMTP server did not take the test: {attempt.code or ''} {attempt.reply}".strip(),
            hint="Check the smtp.* settings ('newsletter config').",
        )
    # The reader's subject and reports; the bodies and bytes went to the test inbox only.
    return Preview(subscriber, selection, digest.subject, "", "", b"", held_back(runner), feed)


def _reader(runner: EditionRunner, email: str | None) -> Subscriber:
    store = runner.store
    if email:
        subscriber = store.subscribers.find_subscriber(normalise_email(email))
        if subscriber is None:
            raise SubscriberError(
                f"{email} is not a subscriber", hint="'newsletter subscribers list' shows them."
            )
        return subscriber
    first = next(iter(store.subscribers.list_subscribers(status=SubscriberStatus.ACTIVE)), None)
    if first is None:
        raise SubscriberError(
            "there are no active subscribers to preview for",
            hint="Add one with 'newsletter subscribers add EMAIL'.",
        )
    return first


def _domain(runner: EditionRunner) -> str:
    return runner.settings.mail.from_address.rsplit("@", 1)[1]
