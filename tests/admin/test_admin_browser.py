"""The operator's flows in a real browser (Playwright driving Debian's chromium), with axe-core on every page.

Signs in, sees the dashboard, previews a reader's next digest, sends a test to
oneself (found in the sink), starts a send and watches it progress, pauses and
resumes it, makes and revokes an API token, imports a Mailchimp export through the
column-mapping preview; every page is checked by axe-core and
must fit 375 px without sideways scrolling of the page itself.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from newsletter.admin.app import create_console
from newsletter.models import EditionStatus
from newsletter.service import Service
from newsletter.sink.faults import FaultRule
from tests.axe import assert_no_violations

from .helpers import PASSWORD, make_users
from .test_admin_import import MAILCHIMP

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
# The README's screenshot; UPDATE_SCREENSHOTS=1 rewrites it (like UPDATE_GOLDEN for golden files).
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console-dashboard.png"
READERS = 40

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"
)


@pytest.fixture
def live(make_service: Any, sink: Any) -> Iterator[tuple[str, Service, Any]]:
    """The console under uvicorn on a free loopback port; sends are slowed so progress can be watched."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = make_service(
        NEWSLETTER_SMTP_CONNECTIONS="1", NEWSLETTER_DELIVERY_BATCH_SIZE="5", NEWSLETTER_SITE_BASE_URL=base_url
    )
    service.runner.ingest()
    for i in range(READERS):
        service.store.subscribers.add_subscriber(email=f"reader{i:02}@example.org", name=f"Reader {i}")
    make_users(service)
    app = create_console(service, dev=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base_url, service, app
    finally:
        app.state.console.engine.wait_idle()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def page_fits(page: Any, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width + 1, f"{page.url} is {scroll} px wide at {width} px"


def test_operator_signs_in_previews_tests_sends_pauses_resumes_and_revokes_a_token(
    live: tuple[str, Service, Any], sink: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base_url, service, app = live
    sink.faults.add(FaultRule(stage="data", action="delay", delay=0.25))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            # Not signed in: the dashboard sends us to the sign-in page.
            page.goto(base_url + "/admin/")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            assert_no_violations(page, label="sign-in")
            page.get_by_label("Email").fill("editor@console.example.org")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            expect(page.get_by_text("Next scheduled editions")).to_be_visible()
            assert_no_violations(page, label="dashboard")

            # Preview a reader's next digest, at 600 and 375 px, then send a test to myself.
            page.get_by_role("link", name="Preview").click()
            page.get_by_label("Reader's address").fill("reader07@example.org")
            page.get_by_role("button", name="Preview").click()
            expect(page.frame_locator("iframe.w600").locator("body")).to_contain_text(
                "Video Surveillance News"
            )
            expect(page.locator("ol.reasons li").first).to_be_visible()
            assert_no_violations(page, label="preview")
            page.get_by_role("button", name="Send a test to me").click()
            expect(page.get_by_role("status")).to_contain_text(
                "A test was sent to editor@console.example.org"
            )
            [test] = sink.wait_for(to="editor@console.example.org", timeout=10)
            assert str(test.as_email()["Subject"]).startswith("[Test] ")

            # Send now: the confirmation names the reader count; then watch the progress.
            page.get_by_role("link", name="Send now").click()
            assert_no_violations(page, label="send now")
            page.get_by_role("link", name="manual (every reader)").click()
            expect(page.get_by_text(f"{READERS} readers will get this manual edition now")).to_be_visible()
            assert_no_violations(page, label="send confirmation")
            page.get_by_role("button", name=f"Yes, send to {READERS} readers").click()
            expect(page.get_by_role("heading", name=re.compile("^Edition manual-now-"))).to_be_visible()
            edition_id = int(page.url.rsplit("/", 1)[1])
            # The counts line updates by itself (polling) while the edition sends.
            expect(page.locator("#edition-counts")).to_contain_text(
                re.compile(r"[1-9]\d* sent"), timeout=15_000
            )
            first = page.locator("#edition-progress").evaluate("e => e.value")
            expect(page.locator("#edition-progress")).not_to_have_attribute(
                "value", str(first), timeout=10_000
            )
            assert_no_violations(page, label="edition while sending")

            page.get_by_role("button", name="Pause").click()
            expect(page.locator("#edition-status")).to_have_text("paused", timeout=15_000)
            app.state.console.engine.wait_idle()
            paused = service.store.editions.get_edition(edition_id)
            assert paused.status is EditionStatus.PAUSED and paused.counts.get("sent", 0) < READERS
            page.reload()
            page.get_by_role("button", name="Resume").click()
            expect(page.locator("#edition-status")).to_have_text("sent", timeout=45_000)
            expect(page.locator("#edition-counts")).to_have_text(f"{READERS} sent")
            # The live page follows the edition after the resume: no stale pause reason,
            # finish time or Resume.
            finished = service.store.editions.get_edition(edition_id).finished_at
            expect(page.locator("main")).not_to_contain_text("paused by")
            expect(page.locator("#edition-finished")).to_have_text(finished.strftime("%Y-%m-%d %H:%M:%S"))
            expect(page.get_by_role("button", name="Resume")).to_have_count(0)
            delivered = [
                m
                for m in sink.messages()
                if str(m.as_email()["To"]).endswith("@example.org>") or "reader" in str(m.as_email()["To"])
            ]
            assert len(delivered) == READERS

            # The dashboard with the sent edition (the README's screenshot), and every page at 375 px.
            page.goto(base_url + "/admin/")
            expect(page.locator(f'tr[data-edition="{edition_id}"] [data-status]')).to_have_text("sent")
            page.screenshot(
                path=str(SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / SCREENSHOT.name),
                full_page=False,
            )
            narrow = browser.new_page(viewport={"width": 375, "height": 800})
            narrow.context.add_cookies(page.context.cookies())
            reader = service.store.subscribers.find_subscriber("reader01@example.org")
            for path in (
                "/admin/",
                "/admin/editions",
                f"/admin/editions/{edition_id}",
                "/admin/readers",
                "/admin/readers?q=reader0",
                f"/admin/readers/{reader.id}",
                "/admin/preview?email=reader01%40example.org",
                "/admin/tokens",
                "/admin/import",
            ):
                narrow.goto(base_url + path)
                page_fits(narrow, 375)
                assert_no_violations(narrow, label=f"{path} at 375 px")
            narrow.close()

            # An API token: made, shown once, works, revoked, then refused.
            page.get_by_role("link", name="API tokens").click()
            page.get_by_label("Name (what it is for)").fill("deploy script")
            page.get_by_role("button", name="Create token").click()
            token = page.locator("#new-token").inner_text()
            assert token.startswith("nlk_")
            assert_no_violations(page, label="tokens")
            auth = {"Authorization": f"Bearer {token}"}
            assert httpx.get(base_url + "/api/v1/editions", headers=auth).status_code == 200
            page.goto(base_url + "/admin/tokens")
            assert token not in page.content()
            page.get_by_role("button", name="Revoke token deploy script").click()
            expect(page.get_by_role("cell", name="revoked")).to_be_visible()
            assert httpx.get(base_url + "/api/v1/editions", headers=auth).status_code == 401

            # Import a Mailchimp export through the column-mapping preview.
            export = tmp_path / "subscribed_members_export.csv"
            export.write_text(MAILCHIMP, encoding="utf-8")
            page.get_by_role("link", name="Import").click()
            assert_no_violations(page, label="import")
            page.get_by_label("CSV file").set_input_files(str(export))
            page.get_by_role("button", name="Preview the columns").click()
            expect(page.get_by_text("read as a mailchimp export")).to_be_visible()
            expect(page.get_by_label("email from")).to_have_value("Email Address")
            expect(page.get_by_role("cell", name="Dana Scully")).to_be_visible()
            assert_no_violations(page, label="import preview")
            assert service.store.subscribers.find_subscriber("dana@example.org") is None
            page.get_by_role("button", name="Import", exact=True).click()
            expect(page.get_by_role("status")).to_contain_text("2 added")
            assert_no_violations(page, label="import finished")
            assert service.store.subscribers.find_subscriber("dana@example.org") is not None

            # An admin's pages: users, audit log, suppression list, settings.
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.get_by_label("Email").fill("admin@console.example.org")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            for name in ("Users", "Audit log", "Suppression list", "Settings"):
                page.get_by_role("link", name=name, exact=True).click()
                expect(page.get_by_role("heading", name=name)).to_be_visible()
                assert_no_violations(page, label=name)
            page.goto(base_url + "/admin/audit")
            expect(page.get_by_role("cell", name="edition.pause")).to_be_visible()
        finally:
            browser.close()
