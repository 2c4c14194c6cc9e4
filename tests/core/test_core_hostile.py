"""Non-ASCII, CR/LF and markup in report titles and subscriber names: encoded correctly,
never a new header, always escaped in HTML."""

from __future__ import annotations

from datetime import UTC
from email.header import decode_header, make_header
from email.utils import getaddresses

import pytest

from newsletter.delivery.message import HeaderInjection, PreparedMessage, address_header, encode_header
from newsletter.errors import SubscriberError
from newsletter.models import DeliveryState
from newsletter.subscriptions import add_subscriber, import_csv
from tests.factories import Item, utc, write_rss
from tests.invariants import assert_wire_format, check_delivery, parse

from .helpers import header_names, parts, scan_html

AS_OF = utc(2018, 8, 22)
BASE_HEADERS = {
    "to",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "from",
    "subject",
    "list-id",
    "x-newsletter-edition",
    "mime-version",
    "content-type",
}


def send_one(make_service, sink, tmp_path, items, *, email="reader@example.org", name="Reader", **env):
    feed = write_rss(tmp_path / "feed.xml", items)
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed), **env)
    add_subscriber(service.store, email, name=name)
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    (m,) = inv.messages_by_rcpt[email]
    return service, m


def test_non_ascii_subject_and_name_round_trip(make_service, sink, tmp_path):
    title = "Überwachung in Zürich: 监控摄像头 “tested” – naïve façade Ωmega"
    name = "José Núñez-Øberg 李小龍"
    service, m = send_one(make_service, sink, tmp_path, [Item(title, "u", utc(2018, 8, 1))], name=name)
    raw = m.raw
    assert_wire_format(raw)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "headers must be 7-bit (RFC 2047 encoded)"
    assert b"=?utf-8?" in head.lower()
    msg = parse(raw)
    assert str(msg["Subject"]) == title  # the headline leads (the From name says who)
    assert getaddresses([str(msg["To"])]) == [(name, "reader@example.org")]
    text, html = parts(msg)
    assert title in text
    assert title in html or title.replace("“", "&ldquo;") in html
    assert {n.lower() for n in header_names(raw)} == BASE_HEADERS


def test_long_non_ascii_subject_is_folded_and_names_decode_back(make_service, sink, tmp_path):
    title = ("Видеонаблюдение " * 12 + "конец").strip()
    name = ("Ödön " * 30).strip()
    service, m = send_one(make_service, sink, tmp_path, [Item(title, "long", utc(2018, 8, 1))], name=name)
    assert_wire_format(m.raw)
    head = m.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    subject_block = head[head.index("\r\nSubject: ") + 2 :].split("\r\n")
    subject_lines = [subject_block[0]] + list(_takewhile_continuation(subject_block[1:]))
    assert len(subject_lines) > 1 and all(len(line) <= 78 for line in subject_lines)
    msg = parse(m.raw)
    assert str(msg["Subject"]) == title[:59].rsplit(" ", 1)[0] + "…"  # the headline, cut near 60 characters
    assert rfc2047_to(m.raw) == (name, "reader@example.org")


def rfc2047_to(raw: bytes) -> tuple[str, str]:
    """(display name, address) of the To header, decoded as RFC 2047 says.

    Whitespace between adjacent encoded-words is not part of the text (RFC 2047
    section 6.2). Python's structured-header parser keeps it, so long names are
    decoded here with email.header, which follows the RFC, as mail clients do.
    """
    head = "\r\n" + raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    block = head[head.index("\r\nTo:") + 2 :].split("\r\n")
    value = block[0][3:] + "".join(line for line in _takewhile_continuation(block[1:]))
    phrase, _, address = value.rpartition("<")
    return str(make_header(decode_header(phrase.strip()))), address.rstrip(">").strip()


def _takewhile_continuation(lines):
    for line in lines:
        if not line.startswith((" ", "\t")):
            return
        yield line


def test_longest_allowed_non_ascii_name_stays_within_line_limits(make_service, sink, tmp_path):
    name = "\U0001f3a5" * 200  # clean_name accepts up to 200 characters
    service, m = send_one(make_service, sink, tmp_path, [Item("Plain", "p", utc(2018, 8, 1))], name=name)
    assert_wire_format(m.raw)
    head_lines = m.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in head_lines) <= 998
    # The name is folded into encoded-words; only List-Unsubscribe (an unbreakable URI) may pass 78.
    assert max(len(line) for line in head_lines if not line.startswith(b"List-Unsubscribe:")) <= 78
    assert rfc2047_to(m.raw) == (name, "reader@example.org")


HOSTILE_TITLE = (
    "AT&amp;T &quot;Tested&quot; &lt;b&gt;bold&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;"
    # Escaped twice: feedparser's sanitizer sees text, not a tag, and passes the handler on;
    # only the service's own cleaning (decode, then strip tags again) stands in its way.
    " &amp;lt;img src=y onerror=alert(3)&amp;gt;"
    "&#13;&#10;Bcc: victim@example.org&#13;&#10;&#13;&#10;<![CDATA[&lt;script&gt;alert(2)&lt;/script&gt;]]>"
    " end"
)


def test_crlf_and_markup_in_a_report_title(make_service, sink, tmp_path):
    items = [
        Item(
            HOSTILE_TITLE,
            "evil",
            utc(2018, 8, 1),
            raw_title=True,
            teaser="Teaser &lt;script&gt;x&lt;/script&gt; &amp; more",
            raw_teaser=True,
        )
    ]
    service, m = send_one(make_service, sink, tmp_path, items)
    raw = m.raw
    assert_wire_format(raw)
    names = {n.lower() for n in header_names(raw)}
    assert names == BASE_HEADERS, f"unexpected headers {names - BASE_HEADERS}"
    assert b"\r\nBcc:" not in raw.split(b"\r\n\r\n", 1)[0]
    assert m.rcpt_tos == ("reader@example.org",)
    assert [x.rcpt_tos for x in sink.messages()] == [("reader@example.org",)]
    msg = parse(raw)
    subject = str(msg["Subject"])
    assert "\r" not in subject and "\n" not in subject
    assert subject.startswith('AT&T "Tested"')
    assert "Bcc: victim@example.org" in subject  # kept as text, on the one Subject line
    text, html = parts(msg)
    scan = scan_html(html)
    tags = {t for t, _ in scan.tags}
    assert "script" not in tags and "img" not in tags and "b" not in tags
    # The title carries two <img onerror=...> tags: no event handler may survive, as an
    # attribute of any tag or as text (markup in an HTML title is stripped, not merely escaped).
    assert [(t, name) for t, attrs in scan.tags for name in attrs if name.lower().startswith("on")] == []
    for trace in ("onerror", "alert(1)", "alert(3)"):
        assert trace not in html.lower() and trace not in text.lower() and trace not in subject.lower(), trace
    assert "<script" not in html.lower()
    assert "AT&amp;T" in html
    title_links = [a for t, a in scan.tags if t == "a" and "report-title" in (a.get("class") or "")]
    assert len(title_links) == 1
    assert 'AT&T "Tested"' in text
    assert "Bcc: victim@example.org" in text
    assert all(not line.startswith("Bcc:") for line in text.splitlines())


def test_markup_that_survives_cleaning_is_escaped_in_html(make_service, sink, tmp_path):
    # "<" without a closing ">" is not a tag: it must reach the HTML escaped.
    title = 'Cameras under <$100 & "cheap" \'uns'
    service, m = send_one(make_service, sink, tmp_path, [Item(title, "lt", utc(2018, 8, 1))])
    msg = parse(m.raw)
    text, html = parts(msg)
    assert str(msg["Subject"]) == title
    assert title in text
    assert "under &lt;$100 &amp;" in html
    assert "under <$100" not in html
    link_text = "".join(scan_html(html).text)
    assert title in link_text


def test_marker_text_in_a_report_title_stays_literal(make_service, sink, tmp_path):
    title = "Why %%RECIPIENT%% and %%UNSUBSCRIBE_URL%% appear here"
    service, m = send_one(make_service, sink, tmp_path, [Item(title, "marker", utc(2018, 8, 1))])
    text, html = parts(parse(m.raw))
    assert title in text
    assert title in html


def test_markup_and_specials_in_a_subscriber_name(make_service, sink, tmp_path):
    name = '<b>Bob</b> & "Co", Inc. <script>'
    service, m = send_one(make_service, sink, tmp_path, [Item("Plain", "p", utc(2018, 8, 1))], name=name)
    msg = parse(m.raw)
    assert getaddresses([str(msg["To"])]) == [(name, "reader@example.org")]
    assert m.rcpt_tos == ("reader@example.org",)
    text, html = parts(msg)
    assert "<b>Bob" not in html and "<script>" not in html
    assert {n.lower() for n in header_names(m.raw)} == BASE_HEADERS


def test_crlf_in_a_subscriber_name_is_refused_at_every_entry_point(make_service):
    import io

    service = make_service()
    with pytest.raises(SubscriberError):
        add_subscriber(service.store, "a@example.org", name="Eve\r\nBcc: x@example.org")
    result = import_csv(
        service.store,
        io.StringIO(
            'email,name\nb@example.org,"Eve\r\nBcc: x@example.org"\nc@example.org,Fine\n', newline=""
        ),
    )
    assert result.added == 1 and len(result.errors) == 1
    assert service.store.subscribers.find_subscriber("b@example.org") is None


def test_crlf_name_in_the_database_does_not_break_the_edition(make_service, sink, tmp_path):
    """A name written by another path (older version, direct SQL) must not stop the edition:
    no header is created, and the other subscribers still get their mail."""
    feed = write_rss(tmp_path / "feed.xml", [Item("Plain", "p", utc(2018, 8, 1))])
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed))
    service.store.subscribers.add_subscriber(email="eve@example.org", name="Eve\r\nBcc: victim@example.org")
    add_subscriber(service.store, "ok@example.org", name="Ok")
    try:
        result = service.runner.run(key="k", as_of=AS_OF)
    finally:
        for m in sink.messages():
            assert b"\r\nBcc:" not in m.raw.split(b"\r\n\r\n", 1)[0]
            assert m.rcpt_tos != ("victim@example.org",)
    inv = check_delivery(
        service.store, service.signer, sink.messages(), result.edition, never=["victim@example.org"]
    )
    assert inv.by_email["ok@example.org"].state is DeliveryState.SENT


def test_header_builders_refuse_line_breaks():
    for bad in ("a\rb", "a\nb", "a\x00b"):
        with pytest.raises(HeaderInjection):
            encode_header("Subject", bad)
        with pytest.raises(HeaderInjection):
            address_header("To", bad, "x@example.org")
        with pytest.raises(HeaderInjection):
            address_header("To", "", "x@example.org" + bad)
    prepared = PreparedMessage(
        from_name="N",
        from_address="n@example.com",
        subject="S",
        text="t %%UNSUBSCRIBE_URL%%",
        html="<p>h</p>",
        list_id="L <l.example.com>",
    )
    with pytest.raises(HeaderInjection):
        prepared.for_recipient(
            to_address="x@example.org",
            to_name="",
            message_id="<a@b>\r\nBcc: y@z",
            date="Mon, 20 Aug 2018 14:00:00 +0000",
            unsubscribe_url="https://u/1",
            preferences_url="https://p/1",
        )
    with pytest.raises(HeaderInjection):
        PreparedMessage(
            from_name="N",
            from_address="n@example.com",
            subject="S\r\nBcc: y@z",
            text="t",
            html="h",
            list_id="L",
        )


def test_body_lines_starting_with_a_dot_survive_smtp(make_service, sink, tmp_path):
    teaser = "." * 75 + " ." + "." * 150 + " end"
    service, m = send_one(
        make_service,
        sink,
        tmp_path,
        [Item("Dots", "dots", utc(2018, 8, 1), teaser=teaser)],
        NEWSLETTER_REPORTS_TEASER_LENGTH="1000",
    )
    text, html = parts(parse(m.raw))
    assert teaser in " ".join(
        text.split()
    )  # the text part wraps at 76 columns (at spaces); every dot arrives
    assert teaser in html


@pytest.mark.parametrize("from_name", ["Vidéo Surveillance Nëws", "News, Inc. (Daily)", "监控新闻"])
def test_configured_from_name_and_reply_to(make_service, sink, tmp_path, from_name):
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    service, m = send_one(
        make_service,
        sink,
        tmp_path,
        [Item("Plain", "p", utc(2018, 8, 1))],
        NEWSLETTER_MAIL_FROM_NAME=from_name,
        NEWSLETTER_MAIL_REPLY_TO="editors@example.com",
    )
    assert_wire_format(m.raw)
    assert m.raw.split(b"\r\n\r\n", 1)[0].isascii()
    msg = parse(m.raw)
    assert getaddresses([str(msg["From"])]) == [(from_name, "news@example.com")]
    assert getaddresses([str(msg["Reply-To"])]) == [("", "editors@example.com")]
    sent = parsedate_to_datetime(str(msg["Date"]))
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 300
