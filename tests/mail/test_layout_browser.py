"""Every mail type fits phone and desktop widths in Chromium, with and without its <style> block.

Gmail apps with non-Google accounts and Gmail's mobile web drop <style> (and @media with
it); the fluid-hybrid layout (width 100%, max-width 600px) must not depend on it, and one
long unbroken word must wrap instead of widening the mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mail.helpers import MAIL_TYPES

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
WIDTHS = (320, 375, 600, 800)
STYLE_BLOCK = re.compile(r"<style\b.*?</style>", re.S | re.I)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed (make browser)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def overflow(browser: Any, html: str, width: int, *, screenshot: Path | None = None) -> tuple[int, int]:
    """(document scroll width, widest element's right edge) at a viewport ``width`` px wide; offline."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.route("**/*", lambda route: route.abort())  # a mail loads nothing; neither does this test
        page.set_content(html, wait_until="load")
        scroll = page.evaluate("document.documentElement.scrollWidth")
        right = page.evaluate(
            "Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right))"
        )
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        return int(scroll), int(right)
    finally:
        page.close()


@pytest.mark.parametrize("kind", MAIL_TYPES)
def test_no_mail_type_overflows_a_phone_or_desktop_with_or_without_its_style_block(
    browser: Any, htmls: dict[str, str], kind: str
) -> None:
    """Regression: confirmation and manage mails were a fixed 600 px;
    the digest needed @media and a long word widened it to 841 px."""
    for html, variant in ((htmls[kind], "as sent"), (STYLE_BLOCK.sub("", htmls[kind]), "without <style>")):
        for width in WIDTHS:
            scroll, right = overflow(browser, html, width)
            assert scroll <= width and right <= width, (
                f"{kind} ({variant}) at {width} px is {max(scroll, right)} px wide"
            )


def test_the_digest_has_no_media_query_and_no_fixed_width(htmls: dict[str, str]) -> None:
    """Regression: the digest's layout lived in an @media rule (dropped by Gmail apps)
    around a fixed 600 px table."""
    for kind, html in htmls.items():
        assert "@media" not in html, kind
        visible = re.sub(
            r"<!--.*?-->", "", html, flags=re.S
        )  # the Outlook-only ghost table lives in a conditional comment
        assert not re.search(r'\bwidth="(?:[4-9]\d\d|\d{4,})"', visible), kind


@pytest.mark.parametrize("kind", MAIL_TYPES)
def test_screenshot_at_375_px(browser: Any, htmls: dict[str, str], screenshots_dir: Path, kind: str) -> None:
    """A 375 px screenshot of each mail type (test-output/mail-screens/), for a person to look at."""
    path = screenshots_dir / f"{kind}-375.png"
    scroll, _ = overflow(browser, htmls[kind], 375, screenshot=path)
    assert path.stat().st_size > 5000 and scroll <= 375
