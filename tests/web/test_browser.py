"""One reader's whole journey in a real browser (Playwright driving Debian's chromium).

Signs up on /, confirms through the mailed link, receives a digest, looks at it at
600 and 375 px, leaves with the one-click POST from the digest's List-Unsubscribe
header, and is skipped by the next send while another reader is not.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.models import Report, SubscriberStatus
from newsletter.service import Service

from .helpers import link_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"
)


def overflowing(page: Any, width: int) -> list[str]:
    """The elements reaching past ``width`` px, to name the culprit when a layout overflows."""
    return page.evaluate(  # type: ignore[no-any-return]
        "w => Array.from(document.querySelectorAll('body *'))"
        ".filter(e => e.getBoundingClientRect().right > w + 1)"
        ".slice(0, 5)"
        ".map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 60))",
        width,
    )


def test_reader_signs_up_confirms_reads_and_leaves_with_one_click(
    live: tuple[str, Service], smtp_sink: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base_url, service = live
    shots = tmp_path / "screenshots"
    shots.mkdir()
    reader = "browser.reader@example.org"
    control, _ = service.store.subscribers.add_subscriber(
        email="control@example.org"
    )  # stays subscribed throughout

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 600, "height": 900})
            page.goto(base_url + "/")
            assert page.get_by_role("heading", name="Get Video Surveillance News In Your Inbox").is_visible()
            box = page.locator("#website").bounding_box()
            assert (
                box is not None and box["x"] + box["width"] <= 0
            )  # the honeypot is off screen: people never fill it
            page.screenshot(path=str(shots / "signup-600.png"), full_page=True)
            page.set_viewport_size({"width": 375, "height": 800})
            page.screenshot(path=str(shots / "signup-375.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, (
                f"the signup page scrolls sideways on a phone: {overflowing(page, 375)}"
            )

            page.fill("#email", reader)
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_load_state()
            assert page.get_by_role("heading", name="Check your inbox").is_visible()

            confirmation = smtp_sink.wait_for(to=reader, timeout=10)[0].as_email()
            page.goto(base_url + link_path(confirmation, "/confirm/"))
            assert (
                service.store.subscribers.find_subscriber(reader).status is SubscriberStatus.PENDING
            )  # opening the link changed nothing
            page.get_by_role("button", name="Confirm").click()
            page.wait_for_load_state()
            assert page.get_by_role("heading", name="You are subscribed").is_visible()
            assert service.store.subscribers.find_subscriber(reader).status is SubscriberStatus.ACTIVE

            first = service.runner.run(key="browser-1", fetch=False)
            assert first.edition.counts.get("sent") == 2
            digest = next(
                m
                for m in smtp_sink.wait_for(to=reader, count=2, timeout=10)
                if m.as_email()["X-Newsletter-Edition"] == "browser-1"
            )
            mail = digest.as_email()
            html = mail.get_body(preferencelist=("html",)).get_content()
            (shots / "digest.html").write_text(html, encoding="utf-8")
            # A fresh page, like a mail client's:
            # our site's CSP (no inline styles) must not apply to the mail.
            reader_view = browser.new_page(viewport={"width": 600, "height": 900})
            reader_view.set_content(html)
            assert reader_view.locator("a.report-title").count() > 0
            reader_view.screenshot(path=str(shots / "digest-600.png"), full_page=True)
            reader_view.set_viewport_size({"width": 375, "height": 800})
            reader_view.screenshot(path=str(shots / "digest-375.png"), full_page=True)
            assert reader_view.evaluate("document.documentElement.scrollWidth") <= 375, (
                f"the digest scrolls sideways on a phone: {overflowing(reader_view, 375)}"
            )
        finally:
            browser.close()

    # The mailbox provider's one-click: a bare POST to the header's URL, no cookies, no redirects.
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(http[^>]+)>", str(mail["List-Unsubscribe"]).strip())
    assert url, mail["List-Unsubscribe"]
    answer = httpx.post(
        url.group(1), data={"List-Unsubscribe": "One-Click"}, follow_redirects=False, timeout=10
    )
    assert answer.status_code == 200 and not answer.headers.get("set-cookie")
    assert service.store.subscribers.find_subscriber(reader).status is SubscriberStatus.UNSUBSCRIBED

    # A new report arrives; the next send reaches the control reader and skips the one who left.
    # Published after the first edition's cut-off and before the second's (settle is 0 here).
    now = datetime.now(UTC)
    published = first.edition.as_of + (now - first.edition.as_of) / 2
    service.store.reports.upsert_reports(
        [
            Report(
                id="browser-new",
                title="A newer report",
                url="https://ipvm.com/reports/browser-new",
                published=published,
                teaser="Fresh.",
            )
        ]
    )
    second = service.runner.run(key="browser-2", fetch=False)
    delivered = {d.email for d in service.store.outbox.list_deliveries(second.edition.id)}
    assert delivered == {control.email}
    smtp_sink.wait_for(to=control.email, count=2, timeout=10)
    assert [
        m for m in smtp_sink.messages(to=reader) if m.as_email()["X-Newsletter-Edition"] == "browser-2"
    ] == []
    for name in ("signup-600.png", "signup-375.png", "digest-600.png", "digest-375.png"):
        assert (shots / name).stat().st_size > 1000
