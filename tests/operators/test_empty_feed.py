"""A valid feed with no items is not an error: it has no reports, and the operator is told so.

Served over real HTTP (the stub feed server), where feedparser flags the missing
Content-Type (it is not told it); that flag once became "is not valid RSS or Atom: no
Content-type specified". Real errors (a broken document, a page that is not a feed) stay errors.
"""

from __future__ import annotations

import logging

import pytest

from newsletter.content.feed import load_reports
from newsletter.errors import FeedError
from tests.core.test_core_cli import ok

EMPTY_RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Video Surveillance News</title><link>https://news.example.com/</link>
<description>Nothing published yet</description></channel></rss>
"""
EMPTY_ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Video Surveillance News</title>
<id>urn:uuid:60a76c80-d399-11d9-b93c-0003939e0af6</id><updated>2026-12-01T00:00:00Z</updated></feed>
"""


@pytest.mark.parametrize("body", [EMPTY_RSS, EMPTY_ATOM], ids=["rss", "atom"])
def test_a_valid_feed_with_no_items_has_no_reports_and_says_so(feed_server, body, caplog):
    url = feed_server.serve("/feed.xml", body)
    with caplog.at_level(logging.WARNING):
        result = load_reports(url, timeout=5, teaser_length=100)
    assert result.reports == () and result.skipped == ()
    assert "the feed has no items" in caplog.text and "Content-type" not in caplog.text


def test_preview_of_an_empty_feed_over_http_is_no_error(cli, feed_server, caplog):
    env = {"NEWSLETTER_REPORTS_FEED": feed_server.serve("/empty.rss", EMPTY_RSS)}
    ok(cli("subscribers", "add", "reader@example.org", env=env))
    with caplog.at_level(logging.WARNING):
        out = ok(cli("preview", env=env))
    assert "the feed has no items" in caplog.text
    assert "Content-type" not in out + caplog.text and "not valid" not in out + caplog.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'<?xml version="1.0"?><rss version="2.0"><channel><title>Cut off', "not valid RSS or Atom"),
        (b"<html><body><p>Our feed moved</p></body></html>", "not an RSS or Atom feed"),
    ],
    ids=["broken", "html"],
)
def test_real_feed_errors_over_http_stay_clear_errors(feed_server, body, says):
    url = feed_server.serve("/bad.xml", body)
    with pytest.raises(FeedError) as excinfo:
        load_reports(url, timeout=5, teaser_length=100)
    assert says in excinfo.value.message and "Content-type" not in excinfo.value.message
