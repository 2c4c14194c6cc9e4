"""Zero axe-core violations on every subscriber page (Playwright driving Debian's chromium).

axe-core comes from npm (`make axe`, run by `make test`); tests/axe.py injects it. Each page
is checked in the state a reader meets it, form errors included: the audit found landmark
and heading violations on every page and form errors not tied to their inputs.
"""

from __future__ import annotations

import pytest

from newsletter.models import SubscriberStatus
from newsletter.service import Service
from newsletter.tokens import Purpose
from tests.axe import axe_violations

from .test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"
)


def test_every_subscriber_page_has_no_axe_violations(live: tuple[str, Service]) -> None:
    from playwright.sync_api import sync_playwright

    base_url, service = live
    subscriber, _ = service.store.subscribers.add_subscriber(
        email="reader@example.org", status=SubscriberStatus.PENDING
    )
    signer = service.signer
    service.runner.run(key="for-the-archive", fetch=False)
    pages = {
        "front page": "/",
        "signup box": "/embed",
        "confirm": "/confirm/" + signer.make(Purpose.CONFIRM, subscriber.id),
        "unsubscribe": "/unsubscribe/" + signer.make(Purpose.UNSUBSCRIBE, subscriber.id),
        "preferences": "/preferences/" + signer.make(Purpose.PREFERENCES, subscriber.id),
        "manage link": "/manage/" + signer.make(Purpose.MANAGE, subscriber.id),
        "lost link": "/manage",
        "archive": "/archive",
        "bad link": "/confirm/nonsense",
        "not found": "/no-such-page",
    }
    found: dict[str, list[str]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            for label, path in pages.items():
                page.goto(base_url + path)
                found[label] = [str(v) for v in axe_violations(page)]
            # The answers to posts, and the forms shown again with an error.
            for label, (path, fill, button) in {
                "signup error": ("/", "not-an-address", "Subscribe"),
                "signup sent": ("/", "new.reader@example.org", "Subscribe"),
                "lost link error": ("/manage", "nobody at example", "Send me a link"),
                "lost link sent": ("/manage", "reader@example.org", "Send me a link"),
            }.items():
                page.goto(base_url + path)
                page.fill("#email", fill)
                page.evaluate(
                    "document.querySelector('#email').removeAttribute('type')"
                )  # let the server judge the address
                page.get_by_role("button", name=button).click()
                page.wait_for_load_state()
                found[label] = [str(v) for v in axe_violations(page)]
                if "error" in label:
                    # The error is tied to its input: read out with it, and the input marked invalid.
                    tied = page.evaluate(
                        "() => { const f = document.querySelector('#email');"
                        " const d = f.getAttribute('aria-describedby');"
                        " return f.getAttribute('aria-invalid') === 'true' && !!d &&"
                        " !!document.getElementById(d) &&"
                        " document.getElementById(d).textContent.trim().length > 0; }"
                    )
                    if not tied:
                        found[label].append(
                            "the error message is not tied to #email (aria-describedby, aria-invalid)"
                        )
            for label, path in {
                "confirmed": "/confirm/" + signer.make(Purpose.CONFIRM, subscriber.id),
                "unsubscribed": "/unsubscribe/" + signer.make(Purpose.UNSUBSCRIBE, subscriber.id),
            }.items():
                page.goto(base_url + path)
                page.locator("main form button[type=submit]").first.click()
                page.wait_for_load_state()
                found[label] = [str(v) for v in axe_violations(page)]
        finally:
            browser.close()
    assert {label: v for label, v in found.items() if v} == {}, "\n".join(
        f"{label}: {v}" for label, vs in found.items() for v in vs
    )
