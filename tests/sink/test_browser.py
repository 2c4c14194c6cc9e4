"""The viewer in a real browser: the live list, one message, its checks panel."""

from __future__ import annotations

import smtplib
from pathlib import Path

from sink_browser import needs_chromium
from sink_samples import GOOD_HTML, build, wire

from newsletter.sink.checks import CHECK_NAMES
from newsletter.sink.server import SinkServer

pytestmark = needs_chromium


def test_list_updates_live_and_message_page_shows_checks(page: object, maildir: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    # An image without alt: the checks panel must show that failure.
    html = GOOD_HTML.replace(' alt="Video Surveillance News"', "")
    with SinkServer(maildir=maildir, http_port=0) as sink:
        page.goto(f"{sink.http_url}/")
        expect(page.locator("#count")).to_have_text("0 message(s)")
        with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as client:
            client.sendmail(
                "news@news.example.com",
                ["reader@example.org"],
                wire(build(subject="Browser digest", html=html)),
            )
        # No reload: the list picks the message up by itself.
        row = page.locator("#messages tbody tr")
        expect(row).to_have_count(1, timeout=10_000)
        expect(row.first).to_contain_text("Browser digest")
        expect(row.first).to_contain_text("reader@example.org")

        page.get_by_role("link", name="Browser digest").click()
        expect(page.locator("#subject")).to_have_text("Browser digest")
        checks = page.locator("#checks tr.check")
        expect(checks).to_have_count(len(CHECK_NAMES))
        img_alt = page.locator("#checks tr[data-check='img-alt']")
        expect(img_alt).to_have_class("check fail")
        expect(img_alt).to_contain_text("without an alt attribute")
        expect(page.locator("#checks tr[data-check='list-unsubscribe']")).to_have_class("check pass")

        frames = page.locator(".frames iframe")
        expect(frames).to_have_count(2)
        assert [frames.nth(i).get_attribute("width") for i in range(2)] == ["600", "375"]
        assert frames.first.get_attribute("sandbox") == ""
        expect(
            page.frame_locator(".frames iframe").first.get_by_text("Axis launches a new camera line")
        ).to_be_visible()
        expect(page.locator("#text-part")).to_contain_text("Unsubscribe: https://news.example.com/u/tok123")
        expect(page.locator("#raw")).to_contain_text("List-Unsubscribe-Post: List-Unsubscribe=One-Click")

        page.get_by_role("button", name="Delete").click()
        expect(page.locator("#count")).to_have_text("0 message(s)")
        assert sink.messages() == []
