"""Every button a person can see on the console's pages is readable, at 1280 and 390 px (a real chromium).

axe-core did not catch the Send now choices and "Preview their next digest" being blue
text on a blue button (a link's colour winning over the button's): this test reads the
computed text colour and the background actually behind it (layers composited up the
tree, as the eye sees them) for every button, link-button and radio or checkbox label,
and needs a WCAG contrast ratio of at least 4.5. It saves a screenshot of each page under
test-output/console-screens/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from newsletter.models import SubscriberStatus
from newsletter.service import Service

from .helpers import PASSWORD
from .test_admin_browser import CHROMIUM, CHROMIUM_ARGS, live  # noqa: F401  (the live console fixture)
from .test_admin_import import MAILCHIMP

SCREENS = Path(__file__).resolve().parents[2] / "test-output" / "console-screens"
WIDTHS = (1280, 390)
MIN_RATIO = 4.5

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"
)

# For each visible control: its text, its computed colour, and the colour behind it, found by
# compositing every background from the element up to the page (white under everything).
COLOURS_JS = """
(selector) => {
  const rgba = (s) => { const m = s.match(/[\\d.]+/g) || [0, 0, 0, 0];
    return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
  const over = (top, under) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]); };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width < 2 || box.height < 2 || style.visibility === 'hidden') continue;
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] >= 1) break;
    }
    let behind = [255, 255, 255, 1];
    for (const layer of layers.reverse()) behind = over(layer, behind);
    const text = rgba(style.color);
    out.push({label: (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 60),
              tag: el.tagName.toLowerCase(), color: over(text, behind), background: behind});
  }
  return out;
}
"""
CONTROLS = (
    "button, a.button, .link-button, input[type=submit], label:has(input[type=radio]),"
    " label:has(input[type=checkbox])"
)


def luminance(rgb: list[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""

    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    """The WCAG contrast ratio of two colours, 1 (the same) to 21 (black on white)."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_helper_tells_blue_on_blue_from_white_on_blue() -> None:
    blue = [11, 92, 171]
    assert contrast(blue, blue) == pytest.approx(1.0)
    assert contrast([255, 255, 255], blue) >= MIN_RATIO
    assert contrast([0, 0, 0], [255, 255, 255]) == pytest.approx(21.0)


def unreadable(page: Any) -> list[str]:
    """Every visible control on the page whose text does not stand out from what is behind it."""
    found = page.evaluate(COLOURS_JS, CONTROLS)
    assert found, f"no controls found on {page.url}"
    return [
        f"{c['tag']} {c['label']!r}: rgb{tuple(round(v) for v in c['color'][:3])} on "
        f"rgb{tuple(round(v) for v in c['background'][:3])} ({contrast(c['color'], c['background']):.2f})"
        for c in found
        if contrast(c["color"], c["background"]) < MIN_RATIO
    ]


def look(page: Any, name: str) -> list[str]:
    """Save the page's screenshot as test-output/console-screens/NAME.png; its unreadable controls."""
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)
    return [f"{name}: {problem}" for problem in unreadable(page)]


def test_every_button_on_the_send_reader_and_import_pages_is_readable_at_1280_and_390_px(
    live: tuple[str, Service, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base_url, service, _app = live
    reader = service.store.subscribers.find_subscriber("reader01@example.org")
    gone = service.store.subscribers.find_subscriber("reader02@example.org")
    service.store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED)  # shows Reactivate
    export = tmp_path / "subscribed_members_export.csv"
    export.write_text(MAILCHIMP, encoding="utf-8")
    SCREENS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(base_url + "/admin/login")
                page.get_by_label("Email").fill("editor@console.example.org")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

                for name, path in (
                    ("send", "/admin/send"),
                    ("send-confirm", "/admin/send?schedule=manual"),
                    ("reader", f"/admin/readers/{reader.id}"),
                    ("reader-reactivate", f"/admin/readers/{gone.id}"),
                    ("import", "/admin/import"),
                ):
                    page.goto(base_url + path)
                    problems += look(page, f"{name}-{width}")
                page.get_by_label("CSV file").set_input_files(str(export))
                page.get_by_role("button", name="Preview the columns").click()
                expect(page.get_by_text(re.compile("read as a mailchimp export"))).to_be_visible()
                problems += look(page, f"import-preview-{width}")
                page.get_by_role("button", name="Import", exact=True).click()
                expect(page.get_by_role("status")).to_contain_text("invalid")
                problems += look(page, f"import-finished-{width}")
                page.close()
        finally:
            browser.close()
    assert not problems, "text too close to its background:\n" + "\n".join(problems)
