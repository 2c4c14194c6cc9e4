"""An editor's first day on a fresh install, in a real browser (Playwright driving Debian's chromium).

Nothing has read the feed yet. The editor signs in, previews a reader's next digest (the page
reads the feed), sends the test to themselves (it arrives signed with both configured DKIM keys,
verified by dkimpy against nsd on loopback, marked "[Test]", and its one-click unsubscribe answers
200 and changes nothing), creates an API token, and sends an edition through the API confirmed
with the audience count: every reader gets it exactly once.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
import uvicorn

from newsletter.admin.mount import WithConsole
from newsletter.delivery.dkim_keys import DkimKey, private_pem
from newsletter.models import SubscriberStatus
from newsletter.service import Service
from newsletter.web.app import create_app
from tests.dkim.conftest import dns_zone, ed_key, rsa_key  # noqa: F401  (the DKIM tests' nsd and keys)
from tests.dkim.dkim_records import key_record

from .helpers import PASSWORD, make_users
from .test_admin_browser import CHROMIUM, CHROMIUM_ARGS

READERS = [f"reader{i}@example.org" for i in range(5)]
EDITOR = "editor@console.example.org"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"
)


def lookup_at(server: str) -> Any:
    """dkimpy's DNS lookup, asking the test's name server."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    host, port = server.split(":")
    resolver.nameservers, resolver.port = [host], int(port)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            return b"".join(resolver.resolve(name.decode(), "TXT")[0].strings)
        except Exception:
            return None

    return lookup


@pytest.fixture
def fresh_install(
    make_service: Any,
    sink: Any,
    tmp_path: Path,
    dns_zone: Any,  # noqa: F811
    ed_key: DkimKey,  # noqa: F811
    rsa_key: DkimKey,  # noqa: F811
) -> Iterator[tuple[str, Service, Any, str]]:
    """Site and console on one loopback port (admin.port 0, as `serve` mounts them), two DKIM keys
    published on nsd, five readers, one editor; the feed never read."""
    server = dns_zone([key_record(ed_key), key_record(rsa_key)])
    files = []
    for key in (ed_key, rsa_key):
        path = tmp_path / f"{key.selector}.pem"
        path.write_bytes(private_pem(key.private))
        files.append(str(path))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = make_service(
        NEWSLETTER_SITE_BASE_URL=base_url,
        NEWSLETTER_MAIL_DKIM_SELECTOR=f"{ed_key.selector},{rsa_key.selector}",
        NEWSLETTER_MAIL_DKIM_KEY_FILE=",".join(files),
        NEWSLETTER_MAIL_DNS_SERVER=server,
    )
    for email in READERS:
        service.store.subscribers.add_subscriber(email=email)
    make_users(service)
    from newsletter.admin.app import create_console

    console = create_console(service, dev=True)
    app = WithConsole(create_app(service, dev=True), console)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base_url, service, console, server
    finally:
        console.state.console.engine.wait_idle()
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_an_editor_previews_tests_and_sends_through_the_api_on_a_fresh_install(
    fresh_install: tuple[str, Service, Any, str], sink: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base_url, service, console, server = fresh_install
    assert service.store.reports.recent_reports(limit=1) == []  # nothing has read the feed
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(base_url + "/admin/")
            page.get_by_label("Email").fill(EDITOR)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

            # Preview: the page reads the feed, so the reader's next digest is there.
            page.get_by_role("link", name="Preview").click()
            page.get_by_label("Reader's address").fill(READERS[2])
            page.get_by_role("button", name="Preview").click()
            expect(page.locator("ol.reasons li").first).to_be_visible()
            expect(page.get_by_text("Nothing new for")).to_have_count(0)
            first_report = service.store.reports.recent_reports(limit=1)[0].title
            expect(page.frame_locator("iframe.w600").locator("body")).to_contain_text(first_report[:30])

            # The test: the real message, signed with both keys, marked, harmless.
            page.get_by_role("button", name="Send a test to me").click()
            expect(page.get_by_text(f"A test was sent to {EDITOR}")).to_be_visible()
            [test] = sink.wait_for(to=EDITOR, timeout=10)
            lookup = lookup_at(server)
            assert len(re.findall(rb"(?im)^DKIM-Signature:", test.raw)) == 2
            assert dkim.DKIM(test.raw).verify(0, dnsfunc=lookup)
            assert dkim.DKIM(test.raw).verify(1, dnsfunc=lookup)
            mail = test.as_email()
            assert str(mail["Subject"]).startswith("[Test] ")
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
            assert unsubscribe.startswith(base_url + "/unsubscribe/")
            clicked = page.request.post(unsubscribe, form={"List-Unsubscribe": "One-Click"})
            assert clicked.status == 200 and "changes nothing" in clicked.text()
            reader = service.store.subscribers.find_subscriber(READERS[2])
            assert reader is not None and reader.status is SubscriberStatus.ACTIVE

            # An API token, made in the console.
            page.get_by_role("link", name="API tokens").click()
            page.get_by_label("Name (what it is for)").fill("first send")
            page.get_by_role("button", name="Create token").click()
            token = page.locator("#new-token").inner_text()
            assert token.startswith("nlk_")
        finally:
            browser.close()

    # Send through the API, confirmed with the audience count; every reader gets it once.
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as api:
        audience = api.get("/api/v1/send/audience", params={"schedule": "manual"}).json()
        assert audience["readers"] == len(READERS), audience
        started = api.post("/api/v1/send", json={"schedule": "manual", "confirm_count": audience["readers"]})
        assert started.status_code == 202, started.text
        console.state.console.engine.wait_idle()
        edition = api.get(f"/api/v1/editions/{started.json()['id']}").json()
    assert edition["status"] == "sent" and edition["counts"] == {"sent": len(READERS)}
    received = Counter(rcpt for m in sink.messages() for rcpt in m.rcpt_tos if rcpt != EDITOR)
    assert received == Counter(dict.fromkeys(READERS, 1))
    [sent] = [e.detail for e in service.store.accounts.audit_entries() if e.action == "edition.send"]
    assert sent.startswith(f"{len(READERS)} readers")
