"""Shared helpers for the core tests: feeds written on the fly, wire-format and delivery checks.

Everything here inspects real outputs (bytes the sink received, rows in the SQLite file);
nothing replaces any part of the service.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import escape

from newsletter.models import DeliveryState
from newsletter.tokens import Purpose, TokenSigner

FINAL_STATES = {DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.DEFERRED, DeliveryState.UNKNOWN, DeliveryState.SUPPRESSED}
UNSUB_RE = re.compile(r"^<(https://[^<>\s]+/unsubscribe/([A-Za-z0-9_.\-]+))>$")


# -- feeds -------------------------------------------------------------------------------


@dataclass
class Item:
    title: str
    slug: str
    published: datetime
    teaser: str = "A teaser."
    topics: Sequence[str] = ()
    guid: str | None = None
    raw_title: bool = False  # True: title is inserted as XML as is (entities, CDATA)
    raw_teaser: bool = False
    extra: str = ""


def rss(items: Iterable[Item], *, channel_title: str = "Test feed") -> str:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(channel_title)}</title><link>https://example.com/reports/</link><description>t</description>",
    ]
    for it in items:
        title = it.title if it.raw_title else escape(it.title)
        teaser = it.teaser if it.raw_teaser else escape(it.teaser)
        cats = "".join(f"<category>{escape(t)}</category>" for t in it.topics)
        parts.append(
            "<item>"
            f"<title>{title}</title>"
            f"<link>https://example.com/reports/{it.slug}</link>"
            f'<guid isPermaLink="false">{escape(it.guid or "test-" + it.slug)}</guid>'
            f"<pubDate>{format_datetime(it.published)}</pubDate>"
            f"<description>{teaser}</description>{cats}{it.extra}"
            "</item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts) + "\n"


def write_rss(path: Path, items: Iterable[Item]) -> Path:
    path.write_text(rss(items), encoding="utf-8")
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# -- messages ------------------------------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def header_names(raw: bytes) -> list[str]:
    """Names of the top-level header fields, read from the wire bytes (continuations skipped)."""
    names = []
    for line in header_block(raw).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        names.append(line.split(b":", 1)[0].decode("ascii"))
    return names


def assert_wire_format(raw: bytes) -> None:
    """CRLF only and no line over 998 octets (RFC 5322 2.1.1, 2.3)."""
    assert raw.endswith(b"\r\n")
    for number, line in enumerate(raw.split(b"\r\n"), 1):
        assert b"\n" not in line, f"bare LF on line {number}: {line[:80]!r}"
        assert b"\r" not in line, f"bare CR on line {number}: {line[:80]!r}"
        assert len(line) <= 998, f"line {number} is {len(line)} octets"


def parts(msg: EmailMessage) -> tuple[str, str]:
    """(text, html) of a multipart/alternative digest, asserting its structure."""
    assert msg.get_content_type() == "multipart/alternative"
    subparts = list(msg.iter_parts())
    assert [p.get_content_type() for p in subparts] == ["text/plain", "text/html"]
    text, html = (p.get_content() for p in subparts)
    return text, html


def unsubscribe_token(msg: EmailMessage) -> tuple[str, str]:
    """(url, token) from List-Unsubscribe, asserting the one-click header pair."""
    values = msg.get_all("List-Unsubscribe")
    assert values is not None and len(values) == 1
    value = " ".join(str(values[0]).split())
    match = UNSUB_RE.match(value)
    assert match, f"List-Unsubscribe is {value!r}"
    posts = msg.get_all("List-Unsubscribe-Post")
    assert posts is not None and len(posts) == 1 and str(posts[0]) == "List-Unsubscribe=One-Click"
    return match.group(1), match.group(2)


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def scan_html(html: str) -> TagCollector:
    collector = TagCollector()
    collector.feed(html)
    collector.close()
    return collector


def edition_messages(sink, key: str) -> list:  # type: ignore[no-untyped-def]
    """Sink messages of one edition (the X-Newsletter-Edition header names it)."""
    return [m for m in sink.messages() if parse(m.raw).get("X-Newsletter-Edition") == key]


# -- delivery invariants (design.md section 6) -------------------------------------------


@dataclass
class Invariants:
    rows: list = field(default_factory=list)
    by_email: dict = field(default_factory=dict)
    messages_by_rcpt: dict = field(default_factory=dict)


def assert_delivery_invariants(store, signer: TokenSigner, sink, edition, *, never: Iterable[str] = ()) -> Invariants:  # type: ignore[no-untyped-def]
    """Every row in exactly one final state, unique Message-IDs matching the stored ones,
    valid unsubscribe headers naming the row's subscriber, suppressed addresses never received."""
    rows = store.outbox.list_deliveries(edition.id)
    assert rows, "the edition has no delivery rows"
    for row in rows:
        assert row.state in FINAL_STATES, f"row {row.id} ({row.email}) ended {row.state.value}"
    subscriber_ids = [r.subscriber_id for r in rows]
    assert len(subscriber_ids) == len(set(subscriber_ids)), "two rows for one subscriber"
    message_ids = [r.message_id for r in rows]
    assert len(message_ids) == len(set(message_ids)), "Message-IDs are not unique"
    by_email = {r.email: r for r in rows}
    messages_by_rcpt: dict[str, list] = defaultdict(list)
    for m in edition_messages(sink, edition.key):
        assert len(m.rcpt_tos) == 1
        messages_by_rcpt[m.rcpt_tos[0]].append(m)
    never = set(never)
    every_rcpt = {r for m in sink.messages() for r in m.rcpt_tos}
    assert not (never & every_rcpt), f"suppressed addresses reached the sink: {never & every_rcpt}"
    for rcpt, received in messages_by_rcpt.items():
        assert rcpt in by_email, f"{rcpt} received mail but has no row"
        row = by_email[rcpt]
        ids = {str(parse(m.raw)["Message-ID"]).strip() for m in received}
        assert ids == {row.message_id}, f"{rcpt} got Message-IDs {ids}, stored {row.message_id}"
        for m in received:
            msg = parse(m.raw)
            _, token = unsubscribe_token(msg)
            assert signer.read(Purpose.UNSUBSCRIBE, token) == row.subscriber_id
            assert_wire_format(m.raw)
    for row in rows:
        if row.state is DeliveryState.SENT:
            assert messages_by_rcpt.get(row.email), f"row {row.email} is sent but the sink has no message"
        if row.state in (DeliveryState.FAILED, DeliveryState.SUPPRESSED, DeliveryState.DEFERRED):
            assert not messages_by_rcpt.get(row.email), f"row {row.email} is {row.state.value} but the sink has it"
    return Invariants(rows, by_email, dict(messages_by_rcpt))
