"""The three mail types as the product builds them, sent through the real sink, and read back.

- ``digest_bytes``: a digest of ``reports`` for one subscriber, as the sender splices it
  (DigestRenderer -> PreparedMessage.for_recipient, dot-stuffed);
- ``transactional_bytes``: the confirmation or manage mail (web.mailer.Mailer.build);
- ``deliver``: the bytes over SMTP (delivery.smtp_client) into the sink, returned as stored;
- ``body_links``: the links of both decoded bodies.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from newsletter.config import Settings
from newsletter.content.render import DigestRenderer, template_environment
from newsletter.delivery.message import PreparedMessage
from newsletter.delivery.smtp_client import Result, SmtpConnection
from newsletter.models import Report, Subscriber, SubscriberStatus
from newsletter.storage.subscribers import SubscriberStore
from newsletter.tokens import Purpose, TokenSigner
from newsletter.web.mailer import CONFIRM, MANAGE, Mailer, MailKind

MAIL_TYPES = ("digest", "confirm", "manage")
KINDS: dict[str, MailKind] = {"confirm": CONFIRM, "manage": MANAGE}
DATE = datetime(2026, 11, 26, 12, tzinfo=UTC)
# One unbroken word of 90 letters: it widened the old fixed layout to 841 px.
LONG_WORD = "Überwachungskamerasystemherstellerzertifizierungsverfahrensdokumentationsanforderungenliste"


def report(
    title: str = "Axis launches a new camera line",
    *,
    slug: str = "axis-cameras",
    teaser: str = "A teaser.",
    n: int = 0,
) -> Report:
    return Report(
        id=f"r-{slug}-{n}",
        title=title,
        url=f"https://example.com/reports/{slug}-{n}",
        published=datetime(2026, 11, 25, 9, tzinfo=UTC),
        teaser=teaser,
        topics=("Testing",),
    )


def signed_links(settings: Settings, signer: TokenSigner, subscriber_id: int) -> dict[str, str]:
    base = settings.site.base_url.rstrip("/")
    return {
        "unsubscribe": f"{base}/unsubscribe/{signer.make(Purpose.UNSUBSCRIBE, subscriber_id)}",
        "preferences": f"{base}/preferences/{signer.make(Purpose.PREFERENCES, subscriber_id)}",
    }


def digest_bytes(
    settings: Settings,
    signer: TokenSigner,
    subscriber: Subscriber,
    reports: list[Report],
    *,
    archive_url: str = "",
) -> tuple[bytes, dict[str, str]]:
    """(dot-stuffed wire bytes, the signed links spliced in) of one digest,
    exactly as the sender makes them."""
    digest = DigestRenderer(settings).render(reports, archive_url=archive_url)
    mail = settings.mail
    prepared = PreparedMessage(
        from_name=mail.from_name,
        from_address=mail.from_address,
        subject=digest.subject,
        text=digest.text,
        html=digest.html,
        list_id=mail.list_id,
    )
    links = signed_links(settings, signer, subscriber.id)
    data = prepared.for_recipient(
        to_address=subscriber.email,
        to_name=subscriber.name,
        message_id=f"<digest.s{subscriber.id}@example.com>",
        date=DATE,
        unsubscribe_url=links["unsubscribe"],
        preferences_url=links["preferences"],
        dot_stuffed=True,
    )
    return data, links


def mailer(settings: Settings, signer: TokenSigner, subscribers: SubscriberStore) -> Mailer:
    return Mailer(settings, template_environment(settings.digest.templates), signer, subscribers)


def transactional_bytes(
    settings: Settings, signer: TokenSigner, subscribers: SubscriberStore, kind: str, subscriber: Subscriber
) -> bytes:
    """The confirmation or manage mail, as the web app builds it (not dot-stuffed:
    the SMTP client does that)."""
    return mailer(settings, signer, subscribers).build(KINDS[kind], subscriber, now=DATE)


def subscriber(subscriber_id: int, email: str = "reader@example.org", name: str = "Reader") -> Subscriber:
    return Subscriber(id=subscriber_id, email=email, name=name, status=SubscriberStatus.ACTIVE)


def deliver(settings: Settings, sink: Any, data: bytes, rcpt: str, *, dot_stuffed: bool) -> Any:
    """Send over SMTP into the sink; the message as the sink stored it (the server undid the dot-stuffing)."""
    before = {m.id for m in sink.messages()}
    connection = SmtpConnection(settings.smtp)
    try:
        attempt = connection.send(settings.mail.from_address, rcpt, data, dot_stuffed=dot_stuffed)
    finally:
        connection.close()
    assert attempt.result is Result.SENT, attempt
    sink.flush()
    (message,) = [m for m in sink.messages() if m.id not in before]
    return message


def mail_bytes(
    kind: str,
    settings: Settings,
    signer: TokenSigner,
    subscribers: SubscriberStore,
    who: Subscriber,
    title: str,
) -> tuple[bytes, bool]:
    """(bytes, already dot-stuffed) of one mail of ``kind`` for ``who``."""
    if kind == "digest":
        reports = [report(title, teaser=f"{title}: {LONG_WORD} in a teaser."), report("Second report", n=1)]
        return digest_bytes(
            settings, signer, who, reports, archive_url=settings.site.base_url.rstrip("/") + "/archive/1"
        )[0], True
    return transactional_bytes(settings, signer, subscribers, kind, who), False


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if tag == "a" and k == "href"]


def parts(raw: bytes) -> tuple[str, str]:
    """(text, html) decoded."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def body_links(raw: bytes) -> tuple[list[str], list[str]]:
    """(URLs of the text part, hrefs of the HTML part), decoded."""
    text, html = parts(raw)
    scan = _Hrefs()
    scan.feed(html)
    return re.findall(r"https?://\S+", text), scan.hrefs


def header_unsubscribe(raw: bytes) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    (uri,) = re.findall(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"]))
    return uri
