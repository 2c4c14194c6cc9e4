"""`newsletter preview` and `send`: --out with nothing new, and reports the settle window holds back.

Regressions: `preview --out FILE` wrote nothing and said nothing when the reader had nothing
new; reports waiting for the settle window (reports.settle) were not mentioned.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.core.test_core_cli import clean_error, ok
from tests.factories import Item, rss, utc


def test_preview_out_with_nothing_new_writes_nothing_says_so_and_exits_1(cli, tmp_path):
    path = tmp_path / "feed.xml"
    path.write_text(rss([Item("Old News", "old", utc(2020, 1, 1))]), encoding="utf-8")
    env = {"NEWSLETTER_REPORTS_FEED": str(path)}
    ok(cli("subscribers", "add", "reader@example.org", env=env))
    ok(cli("send", "--key", "first", env=env))  # the reader has had everything there is
    out_file = tmp_path / "preview.html"
    error = clean_error(cli("preview", "--out", str(out_file), env=env))
    assert "nothing new for reader@example.org" in error and "nothing was written" in error
    assert not out_file.exists()


def test_preview_names_the_reports_the_settle_window_holds_and_until_when(cli, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    fresh = now - timedelta(minutes=2)
    path = tmp_path / "feed.xml"
    path.write_text(
        rss(
            [
                Item("Old News", "old", utc(2020, 1, 1)),
                Item("Fresh One", "fresh-1", fresh),
                Item("Fresh Two", "fresh-2", fresh - timedelta(minutes=1)),
            ]
        ),
        encoding="utf-8",
    )
    env = {"NEWSLETTER_REPORTS_FEED": str(path), "NEWSLETTER_REPORTS_SETTLE": "600"}
    ok(cli("subscribers", "add", "reader@example.org", env=env))
    out = ok(cli("preview", env=env))
    until = fresh + timedelta(seconds=600)
    assert f"2 reports wait for the settle window until {until:%Y-%m-%d %H:%M} UTC" in out
    assert "Old News" in out and "Fresh One" not in out.split("wait for the settle window")[0]


def test_send_names_the_reports_the_settle_window_kept_out_of_the_edition(cli, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path / "feed.xml"
    path.write_text(
        rss(
            [
                Item("Old News", "old", utc(2020, 1, 1)),
                Item("Fresh One", "fresh-1", now - timedelta(minutes=3)),
            ]
        ),
        encoding="utf-8",
    )
    env = {"NEWSLETTER_REPORTS_FEED": str(path), "NEWSLETTER_REPORTS_SETTLE": "600"}
    ok(cli("subscribers", "add", "reader@example.org", env=env))
    out = ok(cli("send", "--key", "e1", env=env))
    until = now - timedelta(minutes=3) + timedelta(seconds=600)
    assert (
        f"Not in this edition: 1 report waits for the settle window until {until:%Y-%m-%d %H:%M} UTC" in out
    )
