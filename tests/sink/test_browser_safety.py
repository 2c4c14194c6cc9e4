"""Hostile pages against the sink in a real browser (Debian's chromium), and axe-core on every viewer page.

The attacker is a second local HTTP server on another port: another origin, as a web page the
developer has open would be.
"""

from __future__ import annotations

import http.server
import smtplib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sink_browser import needs_chromium
from sink_samples import build, wire

from newsletter.sink.server import SinkServer
from tests.axe import axe_violations

pytestmark = needs_chromium


@dataclass
class Attacker:
    """A local web server on its own port: serves `page_html` at / and records every request."""

    base_url: str
    hits: list[tuple[str, str]] = field(default_factory=list)
    page_html: str = ""


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    state = Attacker(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            state.hits.append((self.command, self.path))
            body = state.page_html.encode() if self.path == "/" else b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def deliver(sink: SinkServer, raw: bytes, to: str = "reader@example.org") -> str:
    with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as smtp:
        smtp.sendmail("news@news.example.com", [to], raw)
    return sink.wait_for(to=to)[0].id


def test_cross_site_page_cannot_delete_install_faults_or_fire_one_click(
    maildir: Path, attacker: Attacker, page: Any
) -> None:
    """A cross-site form POST deleted every message;
    no-cors fetches installed a fault and fired a one-click."""
    with SinkServer(maildir=maildir, http_port=0) as sink:
        target = deliver(
            sink, wire(build(headers={"List-Unsubscribe": f"<{attacker.base_url}/unsubscribed>"}))
        )
        sink_url = sink.http_url
        attacker.page_html = f"""<!doctype html><html lang="en"><body>
<form id="wipe" method="post" action="{sink_url}/messages/delete-all"><input name="x" value="1"></form>
</body></html>"""
        page.goto(attacker.base_url + "/")
        page.evaluate(f"""async () => {{
            const opts = {{mode: 'no-cors', method: 'POST', headers: {{'Content-Type': 'text/plain'}}}};
            const hit = async (url, init) => {{ try {{ await fetch(url, init); }} catch (e) {{}} }};
            await hit('{sink_url}/api/faults', {{...opts, body: '{{"spec": "rcpt:550 5.1.1 Gone"}}'}});
            await hit('{sink_url}/api/faults', {{...opts, body: '{{"close_after": 1}}'}});
            await hit('{sink_url}/api/messages/{target}/one-click', opts);
            await hit('{sink_url}/api/messages', {{method: 'DELETE'}});
        }}""")
        with page.expect_navigation():
            page.evaluate("document.getElementById('wipe').submit()")
        assert "refused" in page.content()  # the sink's 403, not a redirect to its emptied list
        assert [m.id for m in sink.messages()] == [target]
        assert sink.faults.rules == [] and sink.faults.close_after is None
        assert ("POST", "/unsubscribed") not in attacker.hits


def test_dns_rebinding_page_reads_nothing(maildir: Path, browser_page: Callable[..., Any]) -> None:
    """The sink answered any Host: a page on a name rebound to 127.0.0.1 could read every mail."""
    page = browser_page("--host-resolver-rules=MAP rebind.example 127.0.0.1")
    with SinkServer(maildir=maildir, http_port=0) as sink:
        deliver(sink, wire(build(subject="Secret token inside")))
        response = page.goto(f"http://rebind.example:{sink.http_port}/api/messages")
        assert response is not None and response.status == 421
        assert "Secret token inside" not in page.content()
        allowed = page.goto(f"http://127.0.0.1:{sink.http_port}/api/messages")
        assert allowed is not None and allowed.status == 200 and "Secret token inside" in page.content()


def test_message_body_opened_as_a_top_level_page_runs_nothing(
    maildir: Path, attacker: Attacker, page: Any
) -> None:
    """A body opened on its own ran its forms and meta refresh in the sink's origin."""
    hostile = f"""<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url={attacker.base_url}/refreshed"></head><body>
<form method="post" action="/messages/delete-all"><button id="go">Claim your prize</button></form>
<script>document.title = 'pwned'; fetch('/api/faults', {{method: 'DELETE'}});</script>
<img src="x" alt="" onerror="document.title = 'pwned'">
<p id="marker">Hostile newsletter</p></body></html>"""
    with SinkServer(maildir=maildir, http_port=0) as sink:
        msg_id = deliver(sink, wire(build(subject="Hostile", html=hostile)))
        page.goto(f"{sink.http_url}/messages/{msg_id}/body.html")
        page.click("#go")
        # A refresh of 0 s or a form submission would have navigated by now; the marker stays.
        page.wait_for_timeout(700)
        assert page.url.endswith("/body.html")
        assert page.locator("#marker").is_visible()
        assert page.title() != "pwned"
        assert page.evaluate("origin") == "null"  # the sandbox: not the sink's origin
        assert ("GET", "/refreshed") not in attacker.hits
        assert [m.id for m in sink.messages()] == [msg_id]


def test_every_viewer_page_has_no_axe_violations(maildir: Path, page: Any) -> None:
    """axe-core found html-has-lang, landmark, heading and scrollable-region violations."""
    from playwright.sync_api import expect

    results: dict[str, list[str]] = {}
    with SinkServer(maildir=maildir, http_port=0) as sink:
        rich = deliver(sink, wire(build(subject="Accessible digest")), to="a@example.org")
        plain = deliver(sink, wire(build(subject="Plain only", html=None)), to="b@example.org")
        page.goto(f"{sink.http_url}/")
        expect(page.locator("#messages tbody tr")).to_have_count(2)
        results["list"] = [str(v) for v in axe_violations(page)]
        page.fill("input[name=q]", "plain")
        expect(page.locator("#messages tbody tr")).to_have_count(1)
        results["list, searched"] = [str(v) for v in axe_violations(page)]
        page.goto(f"{sink.http_url}/messages/{rich}")
        page.click("#one-click")
        expect(page.locator("#one-click-result")).to_be_visible()
        results["message (HTML, text, checks, headers, raw, one-click result)"] = [
            str(v) for v in axe_violations(page)
        ]
        page.goto(f"{sink.http_url}/messages/{plain}")
        results["message (text only)"] = [str(v) for v in axe_violations(page)]
        page.goto(f"{sink.http_url}/messages/no-such-id")
        results["not found"] = [str(v) for v in axe_violations(page)]
    for name, found in results.items():
        print(f"axe-core on {name}: {len(found)} violation(s)")
    assert results == {name: [] for name in results}
