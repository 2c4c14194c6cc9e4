"""Robust feeds: one bad entry no longer rejects a feed, relative links resolve, undated
entries take their first-seen time, a size cap read in chunks, future dates named."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from newsletter.content.feed import load_reports, read_feed
from newsletter.content.feed_state import refresh_feed
from newsletter.errors import FeedError
from tests.core.test_core_cli import ok
from tests.factories import FakeClock, Item, rss, utc

from .conftest import FIXTURES

GITHUB = (FIXTURES / "github_releases.atom").read_bytes()
PUBLISHER = (FIXTURES / "publisher_rss.xml").read_bytes()


def test_github_releases_feed_over_http_has_its_relative_links_resolved_not_refused(feed_server):
    url = feed_server.serve("/example-org/camera-firmware/releases.atom", GITHUB)
    result = load_reports(url, timeout=5, teaser_length=200)
    assert [r.url for r in result.reports] == [
        feed_server.base + "/example-org/camera-firmware/releases/tag/v2.4.0",
        feed_server.base + "/example-org/camera-firmware/releases/tag/v2.3.1",
    ]
    assert result.skipped == () and result.reports[0].title == "v2.4.0"


def test_relative_links_resolve_against_xml_base_even_from_a_file():
    atom = GITHUB.replace(b'xml:lang="en-US"', b'xml:lang="en-US" xml:base="https://github.com/"')
    parsed = read_feed(atom, source="/srv/feeds/releases.atom")
    assert parsed.reports[0].url == "https://github.com/example-org/camera-firmware/releases/tag/v2.4.0"


def test_relative_link_without_any_base_skips_that_entry_with_an_entry_hint():
    with pytest.raises(FeedError) as excinfo:
        read_feed(GITHUB, source="/srv/feeds/releases.atom")
    # Every entry is at fault, not the feed's address: the hint speaks of entries.
    assert "none of its 2 entries" in excinfo.value.message and "relative" in excinfo.value.message
    assert "entry" in excinfo.value.hint and "reports.feed" not in excinfo.value.hint


def test_publisher_feed_with_one_undated_entry_is_kept_whole_and_dated_when_first_seen(
    make_service, tmp_path
):
    first_seen = utc(2026, 11, 23, 9)
    clock = FakeClock(first_seen)
    path = tmp_path / "feed.xml"
    path.write_bytes(PUBLISHER)
    service = make_service(clock=clock, NEWSLETTER_REPORTS_FEED=str(path))
    assert refresh_feed(service.settings, service.store, now=clock()) == (3, 0, False)
    note = service.store.reports.get_reports(["https://news.example.com/?p=4099"])[0]
    assert note.published == first_seen
    # Fetched again a day later, the undated entry keeps the time it was first seen.
    clock.advance(timedelta(days=1))
    assert refresh_feed(service.settings, service.store, now=clock()) == (0, 0, False)
    assert service.store.reports.get_reports(["https://news.example.com/?p=4099"])[0].published == first_seen


def test_one_bad_entry_is_skipped_and_logged_and_the_rest_of_the_feed_is_kept(make_service, tmp_path, caplog):
    text = rss(
        [
            Item("Good one", "good", utc(2026, 11, 1)),
            Item("", "untitled", utc(2026, 11, 2)),
            Item("Good two", "two", utc(2026, 11, 3)),
        ]
    )
    path = tmp_path / "feed.xml"
    path.write_text(text, encoding="utf-8")
    service = make_service(NEWSLETTER_REPORTS_FEED=str(path))
    with caplog.at_level(logging.WARNING):
        added, _, _ = refresh_feed(service.settings, service.store, now=utc(2026, 11, 5))
    assert added == 2
    assert "entry 2" in caplog.text and "has no title" in caplog.text and "skipped" in caplog.text


def test_feed_larger_than_the_cap_is_refused_while_reading_with_or_without_content_length(
    feed_server, tmp_path
):
    big = rss([Item(f"Report {i}", f"r{i}", utc(2026, 1, 1), teaser="x" * 900) for i in range(200)]).encode()
    assert len(big) > 150_000
    for url in (feed_server.serve("/sized.xml", big), feed_server.serve("/chunked.xml", big, chunked=True)):
        with pytest.raises(FeedError) as excinfo:
            load_reports(url, timeout=5, teaser_length=100, max_bytes=100_000)
        assert "reports.max_feed_bytes" in excinfo.value.message and "max_feed_bytes" in excinfo.value.hint
        assert len(load_reports(url, timeout=5, teaser_length=100, max_bytes=len(big)).reports) == 200
    path = tmp_path / "big.xml"
    path.write_bytes(big)
    with pytest.raises(FeedError):
        load_reports(str(path), timeout=5, teaser_length=100, max_bytes=100_000)


def test_max_feed_bytes_is_a_setting(make_service, tmp_path):
    path = tmp_path / "feed.xml"
    path.write_bytes(PUBLISHER)
    service = make_service(NEWSLETTER_REPORTS_FEED=str(path), NEWSLETTER_REPORTS_MAX_FEED_BYTES="10000")
    assert service.settings.reports.max_feed_bytes == 10_000
    assert service.runner.ingest()[0] == 3
    path.write_bytes(PUBLISHER + b" " * 10_000)
    with pytest.raises(FeedError):
        service.runner.ingest()


def test_future_dated_report_is_named_in_the_log_and_in_preview(cli, tmp_path, caplog):
    ahead = utc(2099, 1, 1)
    path = tmp_path / "feed.xml"
    path.write_text(
        rss([Item("Tomorrow's News Today", "future", ahead), Item("Old News", "old", utc(2020, 1, 1))]),
        encoding="utf-8",
    )
    env = {"NEWSLETTER_REPORTS_FEED": str(path)}
    ok(cli("subscribers", "add", "reader@example.org", env=env))
    with caplog.at_level(logging.WARNING):
        out = ok(cli("preview", env=env))
    assert 'Held back: "Tomorrow\'s News Today" is dated 2099-01-01' in out
    assert "Tomorrow's News Today" in caplog.text and "in the future" in caplog.text
