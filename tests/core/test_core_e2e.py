"""End to end: sample subscribers, the sample feed, a real send to the in-process sink,
and what arrived parsed back (MIME, headers, wire format, styles, links, tokens)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from email.utils import getaddresses, parsedate_to_datetime

import pytest

from newsletter.config import SAMPLE_FEED
from newsletter.models import DeliveryState, EditionStatus, SubscriberStatus
from newsletter.tokens import Purpose
from tests.factories import Item, utc, write_rss
from tests.invariants import assert_wire_format, check_delivery, parse, unsubscribe_token

from .helpers import header_names, parts, scan_html

AS_OF = utc(2018, 8, 22)


def feed_items() -> list[dict]:
    """The sample feed read with ElementTree (independently of the service's parser)."""
    root = ET.parse(SAMPLE_FEED).getroot()
    return [
        {
            "title": i.findtext("title"),
            "link": i.findtext("link"),
            "topics": [c.text for c in i.findall("category")],
        }
        for i in root.iter("item")
    ]


def expected_titles(topics: str, max_reports: int = 10) -> list[str]:
    """What a first digest must hold: the newest max_reports items in the subscriber's topics."""
    chosen = {t.strip().casefold() for t in topics.split(";") if t.strip()}
    items = [i for i in feed_items() if not chosen or chosen & {t.casefold() for t in i["topics"]}]
    return [i["title"] for i in items[:max_reports]]  # the sample feed lists newest first


@pytest.fixture
def first_edition(sample_service, sink):
    result = sample_service.runner.run(key="first", as_of=AS_OF)
    return result


def test_every_sample_subscriber_gets_one_correct_digest(sample_service, sink, first_edition, sample_rows):
    service = sample_service
    edition = first_edition.edition
    assert first_edition.created
    assert edition.status is EditionStatus.SENT
    rows = service.store.outbox.list_deliveries(edition.id)
    assert {r.email for r in rows} == {r["email"] for r in sample_rows}
    assert all(r.state is DeliveryState.SENT for r in rows)
    inv = check_delivery(service.store, service.signer, sink.messages(), edition)
    assert set(inv.messages_by_rcpt) == {r["email"] for r in sample_rows}
    assert all(len(v) == 1 for v in inv.messages_by_rcpt.values())

    by_email = {r["email"]: r for r in sample_rows}
    for rcpt, (stored,) in inv.messages_by_rcpt.items():
        row = inv.by_email[rcpt]
        raw = stored.raw
        assert_wire_format(raw)
        msg = parse(raw)
        # exactly one of each mandatory header
        names = [n.lower() for n in header_names(raw)]
        for name in (
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "list-id",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "mime-version",
        ):
            assert names.count(name) == 1, f"{name} appears {names.count(name)} times"
        assert getaddresses([str(msg["From"])]) == [("Video Surveillance News", "news@example.com")]
        ((to_name, to_addr),) = getaddresses([str(msg["To"])])
        assert to_addr == rcpt and to_name == by_email[rcpt]["name"]
        assert parsedate_to_datetime(str(msg["Date"])).tzinfo is not None
        assert str(msg["Message-ID"]) == row.message_id
        assert re.fullmatch(r"<[^<>@\s]+@example\.com>", row.message_id)
        assert str(msg["List-Id"]) == "Video Surveillance News <digest.news.example.com>"
        url, token = unsubscribe_token(msg)
        assert url.startswith("https://news.example.com/unsubscribe/")
        assert service.signer.read(Purpose.UNSUBSCRIBE, token) == row.subscriber_id
        assert stored.rcpt_tos == (rcpt,)

        text, html = parts(msg)
        titles = expected_titles(by_email[rcpt]["topics"])
        assert titles, "every sample subscriber has matching reports"
        n = len(titles)
        suffix = f" and {n - 1} more" if n > 1 else ""
        assert str(msg["Subject"]) == f"{titles[0]}{suffix}"
        # text part: its own template, every report, the unsubscribe URL and the postal address
        words = " ".join(text.split())  # titles may wrap: the text part keeps to 76 columns
        for title in titles:
            assert title in words
        assert [t for t in (i["title"] for i in feed_items()) if t in text and t not in titles] == []
        assert f"Unsubscribe:\r\n{url}\r\n" in text  # links on lines of their own
        assert "1 Example Plaza, Suite 100, Bethlehem, PA 18015, USA" in text
        assert rcpt in text
        assert "%%" not in text and "%%" not in html
        assert "<" not in text.replace(url, "")  # no HTML dumped into the text part
        # HTML part: inlined styles, no external CSS, a fluid layout that needs no @media,
        # links and the unsubscribe link
        scan = scan_html(html)
        assert not [a for t, a in scan.tags if t == "link" and "stylesheet" in (a.get("rel") or "")]
        assert "@media" not in html and "max-width:600px" in html
        report_cells = [a for t, a in scan.tags if t == "td" and "report" in (a.get("class") or "").split()]
        assert len(report_cells) == n
        assert all(a.get("style") for a in report_cells)
        report_links = [
            a for t, a in scan.tags if t == "a" and "report-title" in (a.get("class") or "").split()
        ]
        assert all(a.get("style") for a in report_links)
        links = {a.get("href") for t, a in scan.tags if t == "a"}
        assert url in links
        assert {i["link"] for i in feed_items() if i["title"] in titles} <= links
        assert "Video Surveillance News" in html
        assert "1 Example Plaza, Suite 100, Bethlehem, PA 18015, USA" in "".join(scan.text)
        assert len(html.encode("utf-8")) < 90 * 1024
        # the sink's own deliverability checks agree
        failing = [c for c in stored.checks if c.status == "fail"]
        assert failing == []


def test_one_variant_per_distinct_report_set(sample_service, first_edition):
    store = sample_service.store
    edition = first_edition.edition
    variants = store.editions.list_variants(edition.id)
    rows = store.outbox.list_deliveries(edition.id)
    used = {r.variant_id for r in rows}
    assert used == {v.id for v in variants}
    sets = [v.report_ids for v in variants]
    assert len(sets) == len(set(sets)), "two variants hold the same report set"
    # Dana and Rachel (no topics) share one variant; the six others each have their own.
    assert len(variants) == 7
    by_email = {r.email: r.variant_id for r in rows}
    assert by_email["dana.whitfield@example.org"] == by_email["rachel.okafor@example.net"]


def test_rerun_of_same_key_sends_nothing_and_next_edition_is_skipped(sample_service, sink, first_edition):
    runner = sample_service.runner
    before = len(sink.messages())
    again = runner.run(key="first", as_of=AS_OF)
    assert not again.created
    assert again.edition.status is EditionStatus.SENT
    second = runner.run(key="second", as_of=utc(2018, 8, 23))
    assert second.created
    assert second.edition.status is EditionStatus.SKIPPED
    assert "skipped" in second.message
    assert sample_service.store.outbox.list_deliveries(second.edition.id) == []
    assert len(sink.messages()) == before


def test_subscriber_without_matching_topics_gets_nothing(make_service, sink):
    from newsletter.subscriptions import add_subscriber

    service = make_service()
    add_subscriber(service.store, "match@example.org", topics="China")
    add_subscriber(service.store, "nomatch@example.org", topics="Underwater Basket Weaving")
    result = service.runner.run(key="k", as_of=AS_OF)
    rows = service.store.outbox.list_deliveries(result.edition.id)
    assert [r.email for r in rows] == ["match@example.org"]
    check_delivery(
        service.store, service.signer, sink.messages(), result.edition, never=["nomatch@example.org"]
    )
    assert [m.rcpt_tos for m in sink.messages()] == [("match@example.org",)]


def test_newer_report_goes_only_to_matching_subscribers(make_service, sink, tmp_path, sample_rows):
    from newsletter.config import SAMPLE_SUBSCRIBERS
    from newsletter.subscriptions import import_file

    feed = tmp_path / "feed.xml"
    feed.write_bytes(SAMPLE_FEED.read_bytes())
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed))
    import_file(service.store, SAMPLE_SUBSCRIBERS)
    first = service.runner.run(key="e1", as_of=AS_OF)
    assert first.edition.status is EditionStatus.SENT
    sent_first = len(sink.messages())

    new_item = (
        "<item><title>Hikvision Cybersecurity Backdoor Found</title>"
        "<link>https://example.com/reports/hikvision-backdoor</link>"
        '<guid isPermaLink="false">vsn-hikvision-backdoor</guid>'
        "<pubDate>Thu, 23 Aug 2018 09:00:00 +0000</pubDate>"
        "<description>A new one.</description><category>Cybersecurity</category></item>"
    )
    text = feed.read_text(encoding="utf-8")
    feed.write_text(text.replace("<item>", new_item + "\n<item>", 1), encoding="utf-8")

    second = service.runner.run(key="e2", as_of=utc(2018, 8, 24))
    assert second.edition.status is EditionStatus.SENT
    rows = service.store.outbox.list_deliveries(second.edition.id)
    expected = {
        r["email"] for r in sample_rows if not r["topics"] or "Cybersecurity" in r["topics"].split(";")
    }
    assert (
        {r.email for r in rows}
        == expected
        == {"dana.whitfield@example.org", "rachel.okafor@example.net", "priya.raman@example.org"}
    )
    inv = check_delivery(service.store, service.signer, sink.messages(), second.edition)
    assert set(inv.messages_by_rcpt) == expected
    for (m,) in inv.messages_by_rcpt.values():
        msg = parse(m.raw)
        assert str(msg["Subject"]) == "Hikvision Cybersecurity Backdoor Found"
        text_part, html = parts(msg)
        assert "1 new report since your last digest." in text_part
        assert "1. Hikvision Cybersecurity Backdoor Found" in text_part
        assert "2. " not in text_part
    assert len(service.store.editions.list_variants(second.edition.id)) == 1
    assert len(sink.messages()) == sent_first + 3


def test_unsubscribed_before_send_never_reaches_sink(sample_service, sink):
    store = sample_service.store
    gone = store.subscribers.find_subscriber("priya.raman@example.org")
    assert store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED)
    result = sample_service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(
        store, sample_service.signer, sink.messages(), result.edition, never=["priya.raman@example.org"]
    )
    assert "priya.raman@example.org" not in inv.by_email
    assert len(inv.messages_by_rcpt) == 7


def test_unsubscribe_after_planning_suppresses_the_row(sample_service, sink):
    """A subscriber who leaves between planning and sending is skipped (row suppressed)."""
    store = sample_service.store
    leaving = store.subscribers.find_subscriber("kenji.watanabe@example.org")

    def planned(_total: int) -> None:
        store.subscribers.set_status(leaving.id, SubscriberStatus.UNSUBSCRIBED)

    result = sample_service.runner.run(key="k", as_of=AS_OF, on_planned=planned)
    inv = check_delivery(
        store, sample_service.signer, sink.messages(), result.edition, never=["kenji.watanabe@example.org"]
    )
    assert inv.by_email["kenji.watanabe@example.org"].state is DeliveryState.SUPPRESSED
    assert len(inv.messages_by_rcpt) == 7


def test_small_html_budget_drops_the_tail_as_more_reports(make_service, sink, tmp_path):
    from newsletter.subscriptions import add_subscriber

    teaser = (
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit,"
        " sed do eiusmod tempor incididunt ut labore. " * 3
    )[:270]
    items = [
        Item(
            f"Report number {i:02d}",
            f"r{i:02d}",
            utc(2018, 8, 1, 12, i),
            teaser=teaser,
            topics=["Business", "China"],
        )
        for i in range(30)
    ]
    feed = write_rss(tmp_path / "big.xml", items)
    service = make_service(
        NEWSLETTER_REPORTS_FEED=str(feed),
        NEWSLETTER_DIGEST_MAX_REPORTS="30",
        NEWSLETTER_DIGEST_MAX_HTML_BYTES="10000",
    )
    add_subscriber(service.store, "reader@example.org", name="Reader")
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    (m,) = inv.messages_by_rcpt["reader@example.org"]
    text, html = parts(parse(m.raw))
    shown = re.findall(r"Report number (\d\d)", text)
    assert 0 < len(shown) < 30
    assert shown == [f"{i:02d}" for i in range(29, 29 - len(shown), -1)]  # newest first, the tail dropped
    more = 30 - len(shown)
    assert f"{more} more reports" in text
    assert f"{more} more reports" in html
    more_links = [a for t, a in scan_html(html).tags if t == "a" and "more-link" in (a.get("class") or "")]
    assert len(more_links) == 1 and more_links[0]["href"].startswith("https://")
    assert len(html.encode("utf-8")) <= 10000
    assert str(parse(m.raw)["Subject"]).endswith(" and 29 more")


def test_default_budget_keeps_html_under_90kb_with_long_teasers(make_service, sink, tmp_path):
    from newsletter.subscriptions import add_subscriber

    teaser = "Word " * 400
    items = [
        Item(f"Long report {i}", f"l{i}", utc(2018, 8, 2, i), teaser=teaser, topics=["China"])
        for i in range(10)
    ]
    feed = write_rss(tmp_path / "long.xml", items)
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_REPORTS_TEASER_LENGTH="2000")
    add_subscriber(service.store, "reader@example.org")
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    (m,) = inv.messages_by_rcpt["reader@example.org"]
    _, html = parts(parse(m.raw))
    assert len(html.encode("utf-8")) < 90 * 1024
