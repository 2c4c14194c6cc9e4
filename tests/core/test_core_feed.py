"""Feed ingest: RSS and Atom parsing, teaser cleaning, upserts by id, and feed failures
(an unreachable URL, a malformed file) that fail the edition and send nothing."""

from __future__ import annotations

from datetime import UTC

import pytest

from newsletter.config import SAMPLE_FEED
from newsletter.content.feed import load_reports, parse_feed, plain_text
from newsletter.errors import FeedError
from newsletter.models import EditionStatus
from newsletter.subscriptions import add_subscriber
from tests.factories import Item, rss, utc
from tests.servers import free_port

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom reports</title>
  <id>urn:uuid:feed</id>
  <updated>2018-08-21T14:00:00Z</updated>
  <entry>
    <title type="html">Dahua &amp;amp; Hikvision &lt;b&gt;Banned&lt;/b&gt;</title>
    <link rel="alternate" href="https://example.com/reports/dahua-hikvision-banned"/>
    <id>urn:vsn:dahua-hikvision-banned</id>
    <published>2018-08-21T10:00:00-04:00</published>
    <updated>2018-08-22T10:00:00Z</updated>
    <summary type="html">&lt;p&gt;The &lt;em&gt;NDAA&lt;/em&gt; bans \
&amp;quot;covered&amp;quot; equipment&amp;hellip;&lt;/p&gt;</summary>
    <category term="Government"/>
    <category term="China"/>
  </entry>
  <entry>
    <title>Updated only</title>
    <link href="https://example.com/reports/updated-only"/>
    <id>urn:vsn:updated-only</id>
    <updated>2018-08-20T09:30:00Z</updated>
    <content type="html">&lt;div&gt;From the content element&lt;/div&gt;</content>
  </entry>
</feed>
"""


def test_sample_feed_parses_to_twenty_reports():
    reports = parse_feed(SAMPLE_FEED.read_bytes(), source="sample")
    assert len(reports) == 20
    assert len({r.id for r in reports}) == 20
    first = reports[0]
    assert first.id == "vsn-snmp-network-monitoring-for-surveillance-2018"
    assert first.title == "SNMP / Network Monitoring For Surveillance 2018"
    assert first.url == "https://example.com/reports/snmp-network-monitoring-for-surveillance-2018"
    assert first.published == utc(2018, 8, 21, 14)
    assert first.topics == ("Networking",)
    # &lt;em&gt;&amp;quot;down&amp;quot;&lt;/em&gt;: markup stripped, entities decoded
    assert 'knowing a camera is "down" with no warning' in first.teaser
    assert "<" not in first.teaser and "&" not in first.teaser
    members = {r.id: r.members_only for r in reports}
    assert members["vsn-axis-first-ir-ptz-tested-q6125-le"] is True
    assert members["vsn-first-us-city-bans-hikvision"] is False
    assert all(r.published.tzinfo is not None for r in reports)


def test_atom_feed():
    reports = parse_feed(ATOM.encode(), source="atom.xml")
    assert [r.id for r in reports] == ["urn:vsn:dahua-hikvision-banned", "urn:vsn:updated-only"]
    banned, updated = reports
    assert banned.title == "Dahua & Hikvision Banned"
    assert banned.url == "https://example.com/reports/dahua-hikvision-banned"
    assert banned.published == utc(2018, 8, 21, 14)  # published wins over updated, -04:00 converted
    assert banned.published.tzinfo is not None and banned.published.utcoffset() == UTC.utcoffset(None)
    assert banned.teaser == 'The NDAA bans "covered" equipment…'
    assert banned.topics == ("Government", "China")
    assert updated.published == utc(2018, 8, 20, 9, 30)
    assert updated.teaser == "From the content element"
    assert updated.topics == ()


def test_teaser_is_capped_on_a_word_boundary():
    long = "surveillance " * 100
    items = [Item("Long", "long", utc(2018, 8, 1), teaser=long)]
    (report,) = parse_feed(rss(items).encode(), source="x", teaser_length=50)
    assert len(report.teaser) <= 50
    assert report.teaser.endswith("surveillance…")


def test_plain_text_strips_markup_decodes_entities_and_line_breaks():
    cleaned = plain_text("<p>A&amp;B &#8211; <b>bold</b>\r\nnext\x07</p>")
    assert cleaned == "A&B – bold next"
    assert plain_text("&amp;quot;twice&amp;quot;") == '"twice"'


def test_same_id_twice_is_one_row_and_changes_update_it(tmp_path, make_service):
    service = make_service()
    store = service.store
    one = [Item("Original title", "r1", utc(2018, 8, 1), guid="g1")]
    both = one + [Item("Repeated id, later copy", "r1b", utc(2018, 8, 2), guid="g1")]
    reports = parse_feed(rss(both).encode(), source="x")
    assert len(reports) == 1 and reports[0].title == "Repeated id, later copy"
    assert store.reports.upsert_reports(parse_feed(rss(one).encode(), source="x")) == (1, 0)
    assert store.reports.upsert_reports(parse_feed(rss(one).encode(), source="x")) == (0, 0)
    changed = [Item("Changed title", "r1", utc(2018, 8, 1), guid="g1", teaser="New teaser")]
    assert store.reports.upsert_reports(parse_feed(rss(changed).encode(), source="x")) == (0, 1)
    (stored,) = store.reports.recent_reports()
    assert stored.title == "Changed title" and stored.teaser == "New teaser"
    assert store.reports.count_reports() == 1


def test_link_is_the_id_when_there_is_no_guid():
    text = rss([Item("No guid", "no-guid", utc(2018, 8, 1))]).replace(
        '<guid isPermaLink="false">test-no-guid</guid>', ""
    )
    (report,) = parse_feed(text.encode(), source="x")
    assert report.id == "https://example.com/reports/no-guid"


@pytest.mark.parametrize(
    "body, words",
    [
        (b"this is not a feed at all", ["not"]),
        (b"<html><body><p>Hello</p></body></html>", ["not"]),
        (b"", ["not"]),
    ],
)
def test_malformed_documents_are_one_line_feed_errors(body, words):
    with pytest.raises(FeedError) as excinfo:
        parse_feed(body, source="/srv/feeds/broken.xml")
    message = str(excinfo.value)
    assert "/srv/feeds/broken.xml" in message and "\n" not in message
    assert all(w in message for w in words)


def test_entry_without_date_is_kept_dated_when_first_seen_and_one_without_link_is_named():
    text = rss([Item("Dateless", "d", utc(2018, 8, 1))])
    text = text.replace(text[text.index("<pubDate>") : text.index("</pubDate>") + 10], "")
    (report,) = parse_feed(text.encode(), source="f.xml", now=utc(2018, 8, 5, 12))
    assert report.title == "Dateless" and report.published == utc(2018, 8, 5, 12)
    text = rss([Item("Relative", "r", utc(2018, 8, 1))]).replace(
        "https://example.com/reports/r", "/reports/r"
    )
    with pytest.raises(FeedError) as excinfo:
        parse_feed(text.encode(), source="f.xml")
    assert "Relative" in str(excinfo.value)


def test_unreachable_feed_url_fails_the_edition_and_sends_nothing(make_service, sink):
    url = f"http://127.0.0.1:{free_port()}/feed.xml"
    service = make_service(NEWSLETTER_REPORTS_FEED=url, NEWSLETTER_REPORTS_TIMEOUT="2")
    add_subscriber(service.store, "reader@example.org")
    with pytest.raises(FeedError) as excinfo:
        service.runner.run(key="k")
    message = str(excinfo.value)
    assert url in message and "\n" not in message
    assert excinfo.value.hint
    edition = service.store.editions.find_edition("k")
    assert edition.status is EditionStatus.FAILED
    assert url in edition.reason
    assert service.store.outbox.list_deliveries(edition.id) == []
    assert sink.messages() == []
    # the edition is over: running the key again sends nothing either
    assert service.runner.run(key="k").edition.status is EditionStatus.FAILED
    assert sink.messages() == []


def test_malformed_feed_file_fails_the_edition_and_sends_nothing(make_service, sink, tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<rss><channel><title>half", encoding="utf-8")
    service = make_service(NEWSLETTER_REPORTS_FEED=str(path))
    add_subscriber(service.store, "reader@example.org")
    with pytest.raises(FeedError) as excinfo:
        service.runner.run(key="k")
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    edition = service.store.editions.find_edition("k")
    assert edition.status is EditionStatus.FAILED and str(path) in edition.reason
    assert service.store.reports.count_reports() == 0
    assert sink.messages() == []


def test_missing_feed_file(tmp_path):
    with pytest.raises(FeedError) as excinfo:
        load_reports(str(tmp_path / "nope.xml"), timeout=1, teaser_length=100)
    assert "nope.xml" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_feed_with_an_undated_entry_stores_every_entry(make_service, tmp_path):
    good = Item("Good", "good", utc(2018, 8, 1))
    text = rss([good, Item("No date", "nodate", utc(2018, 8, 2))])
    start = text.rindex("<pubDate>")
    text = text[:start] + text[text.index("</pubDate>", start) + 10 :]
    path = tmp_path / "partial.xml"
    path.write_text(text, encoding="utf-8")
    service = make_service(NEWSLETTER_REPORTS_FEED=str(path))
    assert service.runner.ingest() == (2, 0)
    assert service.store.reports.count_reports() == 2


def test_feed_over_http(feed_server):
    """A feed served over HTTP by a real local server (http.server in a thread)."""
    body = rss([Item("Served over HTTP", "http", utc(2018, 8, 3), topics=["China"])]).encode()
    result = load_reports(feed_server.serve("/feed.xml", body), timeout=5, teaser_length=100)
    assert [r.title for r in result.reports] == ["Served over HTTP"]
    missing = feed_server.base + "/missing.xml"
    with pytest.raises(FeedError) as excinfo:
        load_reports(missing, timeout=5, teaser_length=100)
    assert "404" in str(excinfo.value) and missing in str(excinfo.value)


def test_plain_text_title_keeps_angle_brackets():
    text = rss(
        [
            Item("Cameras <$100 vs >$500 Compared", "x", utc(2018, 8, 1)),
            Item("Standard <2018> Update", "y", utc(2018, 8, 2)),
        ]
    )
    titles = [r.title for r in parse_feed(text.encode(), source="x")]
    assert titles == ["Cameras <$100 vs >$500 Compared", "Standard <2018> Update"]
