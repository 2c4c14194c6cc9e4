"""The sink as a safe local tool: each test names a way a hostile page, client or setup used to win.

Over real HTTP and real SMTP against a live sink; the browser versions are in test_browser_safety.
"""

from __future__ import annotations

import mailbox
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sink_samples import build, wire

from newsletter.sink.errors import OneClickError
from newsletter.sink.server import SinkServer


@pytest.fixture
def live(maildir: Path) -> Iterator[SinkServer]:
    with SinkServer(maildir=maildir, http_port=0) as sink:
        yield sink


def client(sink: SinkServer, **headers: str) -> httpx.Client:
    assert sink.http_url is not None
    return httpx.Client(base_url=sink.http_url, timeout=15, trust_env=False, headers=headers)


def send(
    sink: SinkServer, raw: bytes | None = None, *, subject: str = "Weekly", to: str = "reader@example.org"
) -> str:
    with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as smtp:
        smtp.sendmail("news@news.example.com", [to], raw or wire(build(subject=subject, to=to)))
    return sink.wait_for(subject=subject if raw is None else None, to=to)[0].id


# -- DNS rebinding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "attacker.example:8025", "127.0.0.1.nip.io", "sink.internal"]
)
def test_dns_rebinding_host_is_refused_with_421(live: SinkServer, host: str) -> None:
    send(live)
    with client(live, Host=host) as http:
        for path in ("/", "/api/messages", f"/api/messages/{live.messages()[0].id}/raw"):
            response = http.get(path)
            assert response.status_code == 421, path
            assert "Weekly" not in response.text and "--allow-host" in response.text


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "[::1]", "app.localhost"])
def test_loopback_host_names_are_answered(live: SinkServer, host: str) -> None:
    with client(live, Host=f"{host}:{live.http_port}") as http:
        assert http.get("/api/messages").status_code == 200


def test_configured_host_names_are_answered(maildir: Path) -> None:
    with (
        SinkServer(maildir=maildir, http_port=0, allowed_hosts=["sink.test"]) as sink,
        client(sink, Host="sink.test:8025") as http,
    ):
        assert http.get("/api/messages").status_code == 200
        assert http.get("/api/messages", headers={"Host": "other.test"}).status_code == 421


# -- cross-site requests ------------------------------------------------------------------------


def test_state_changes_without_the_token_change_nothing(live: SinkServer, tmp_path: Path) -> None:
    """What a cross-site form POST or no-cors fetch can send: no custom header, no token."""
    msg_id = send(live)
    with client(live) as http:
        attempts = [
            http.post("/messages/delete-all", data={"x": "1"}),
            http.post(f"/messages/{msg_id}/delete"),
            http.delete("/api/messages"),
            http.delete(f"/api/messages/{msg_id}"),
            http.post("/api/faults", content=b'{"spec": "rcpt:550"}', headers={"Content-Type": "text/plain"}),
            http.delete("/api/faults"),
            http.post(f"/api/messages/{msg_id}/one-click"),
            http.post("/messages/delete-all", data={"sink_token": "guessed-wrong-token-value"}),
        ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert all("X-Sink-Token" in r.json()["error"] for r in attempts)
    assert [m.id for m in live.messages()] == [msg_id]
    assert live.faults.rules == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # same site, another port: another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_origin_requests_are_refused_even_with_the_token(
    live: SinkServer, headers: dict[str, str]
) -> None:
    send(live)
    with client(live, **{"X-Sink-Token": live.token, **headers}) as http:
        assert http.delete("/api/messages").status_code == 403
        assert http.post("/api/faults", json={"spec": "rcpt:550"}).status_code == 403
    assert len(live.messages()) == 1 and live.faults.rules == []


def test_the_viewer_itself_can_still_change_state(live: SinkServer) -> None:
    first, second = send(live, subject="one"), send(live, subject="two")
    origin = live.http_url or ""
    with client(live, Origin=origin, **{"Sec-Fetch-Site": "same-origin"}) as http:
        form = http.post(f"/messages/{first}/delete", data={"sink_token": live.token})
        assert form.status_code == 303
        assert (
            http.post(
                "/api/faults", json={"spec": "rcpt:550"}, headers={"X-Sink-Token": live.token}
            ).status_code
            == 201
        )
        assert http.post("/messages/delete-all", data={"sink_token": live.token}).status_code == 303
    assert live.messages() == [] and len(live.faults.rules) == 1
    assert second


# -- headers ------------------------------------------------------------------------------------


def test_viewer_pages_send_csp_and_frame_ancestors_none(live: SinkServer) -> None:
    msg_id = send(live)
    with client(live) as http:
        for path in (
            "/",
            f"/messages/{msg_id}",
            "/messages/nope",
            "/api/messages",
            f"/api/messages/{msg_id}/raw",
        ):
            response = http.get(path)
            csp = response.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp, path
            assert response.headers["x-frame-options"] == "DENY", path
            assert response.headers["x-content-type-options"] == "nosniff", path
            if response.headers["content-type"].startswith("text/html"):
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), f"inline script on {path}"
                assert " on" + "click=" not in response.text and "onsubmit=" not in response.text


HOSTILE_HTML = """<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/refreshed">
<META HTTP-EQUIV='Refresh' CONTENT='1'></head><body>
<form method="post" action="/messages/delete-all"><button id="go">Win a prize</button></form>
<script>document.title = 'pwned'</script><p>Hostile</p></body></html>"""


def test_message_body_is_served_in_a_csp_sandbox_with_meta_refresh_neutralised(live: SinkServer) -> None:
    msg_id = send(live, wire(build(subject="Hostile", html=HOSTILE_HTML)))
    with client(live) as http:
        body = http.get(f"/messages/{msg_id}/body.html")
    csp = [d.strip() for d in body.headers["content-security-policy"].split(";")]
    assert csp[0] == "sandbox"  # no allow-scripts, allow-forms or allow-same-origin
    assert "form-action 'none'" in csp and "default-src 'none'" in csp
    assert not re.search(r"http-equiv\s*=\s*['\"]?\s*refresh", body.text, re.IGNORECASE)
    assert "Win a prize" in body.text


# -- one-click ----------------------------------------------------------------------------------


def test_one_click_never_targets_the_sink_itself(live: SinkServer) -> None:
    """A message whose unsubscribe URI is the sink's own delete-all (or SMTP port) is refused."""
    send(live, subject="keep me")
    targets = [
        f"http://127.0.0.1:{live.http_port}/messages/delete-all",
        f"http://localhost:{live.http_port}/messages/delete-all",
        f"http://127.0.0.2:{live.http_port}/api/faults",
        f"http://[::1]:{live.http_port}/messages/delete-all",
        f"http://0.0.0.0:{live.http_port}/messages/delete-all",
        f"http://app.localhost:{live.smtp_port}/",
    ]
    for n, url in enumerate(targets):
        msg_id = send(
            live,
            wire(
                build(headers={"List-Unsubscribe": f"<{url}>"}),
            ),
            to=f"t{n}@example.org",
        )
        with pytest.raises(OneClickError, match="the sink itself") as refused:
            live.one_click(msg_id)
        assert refused.value.refused_target
        with client(live, **{"X-Sink-Token": live.token}) as http:
            answer = http.post(f"/api/messages/{msg_id}/one-click")
        assert answer.status_code == 403 and "the sink itself" in answer.json()["error"]
    assert live.messages(subject="keep me")


# -- memory -------------------------------------------------------------------------------------


def test_parsed_messages_stay_bounded_in_memory(maildir: Path) -> None:
    """Every message looked at used to keep its bytes and parsed MIME for ever."""
    big_html = "<p>" + ("Large newsletter body. " * 20_000) + "</p>"  # ~460 KB each
    with SinkServer(maildir=maildir, parsed_cache=3) as sink:
        with smtplib.SMTP(sink.host, sink.smtp_port, timeout=30) as smtp:
            for n in range(25):
                smtp.sendmail(
                    "news@news.example.com", ["r@example.org"], wire(build(subject=f"Big {n}", html=big_html))
                )
        messages = sink.wait_for(count=25, timeout=30)
        sink.flush()
        for message in messages:  # what the viewer does for each message page
            assert message.html is not None and len(message.checks) > 0
            assert len(sink.store.cache) <= 3
        assert sink.store.cache.pinned == 0
        assert sink.store.cache.cached_ids() == [m.id for m in messages[-3:]]
        # An evicted message is read back from its file, whole.
        assert "Large newsletter body." in (messages[0].html or "")


# -- the Maildir it did not write ---------------------------------------------------------------


def foreign_maildir(path: Path, count: int) -> dict[str, bytes]:
    box = mailbox.Maildir(path, create=True)
    for n in range(count):
        box.add(
            (
                f"From: friend{n}@example.net\r\nTo: me@example.org\r\nSubject: Mine {n}\r\n\r\nhello {n}\r\n"
            ).encode()
        )
    return {p.name: p.read_bytes() for p in (path / "new").iterdir()}


def test_existing_maildir_of_1500_messages_is_never_deleted(maildir: Path) -> None:
    """Pointed at a developer's Maildir of 1,500, the sink deleted the oldest 500 at start."""
    before = foreign_maildir(maildir, 1500)
    with SinkServer(maildir=maildir, max_messages=1000) as sink:
        assert len(sink.messages()) == 1500 and sink.store.foreign_count == 1500
        assert sink.clear() == 0
    with SinkServer(maildir=maildir, max_messages=3) as sink:
        with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as smtp:
            for n in range(5):
                smtp.sendmail("news@news.example.com", ["r@example.org"], wire(build(subject=f"own {n}")))
        sink.wait_for(subject="own 4")
        # The cap keeps 3 of the sink's own; the 1,500 are not counted and not touched.
        assert sorted(m.subject for m in sink.messages(subject="own")) == ["own 2", "own 3", "own 4"]
        assert sink.store.foreign_count == 1500
        assert sink.clear() == 3
    with SinkServer(maildir=maildir, max_messages=1) as sink:
        assert len(sink.messages()) == 1500
    after = {p.name: p.read_bytes() for p in (maildir / "new").iterdir()}
    assert after == before


def test_start_says_in_one_line_what_it_never_deletes(maildir: Path) -> None:
    foreign_maildir(maildir, 7)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter.sink.cli",
            "--smtp-port",
            "0",
            "--maildir",
            str(maildir),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "7 messages kept" in lines[0]
    assert lines[1].startswith("Deletes only mail it stores itself: the 7 message(s) already in")
    assert lines[1].rstrip().endswith("are never deleted.")
    assert len(list((maildir / "new").iterdir())) == 7


# -- paging and search --------------------------------------------------------------------------


def test_paging_and_search_reach_every_message(live: SinkServer) -> None:
    """The viewer showed only the newest 200, and searched only those."""
    with smtplib.SMTP(live.host, live.smtp_port, timeout=30) as smtp:
        for n in range(230):
            smtp.sendmail(
                "news@news.example.com",
                [f"r{n}@example.org"],
                wire(build(subject=f"Issue {n:03d}", to=f"r{n}@example.org")),
            )
    live.wait_for(count=230, timeout=30)
    with client(live) as http:
        seen: list[str] = []
        offset = 0
        while True:
            page = http.get("/api/messages", params={"limit": 50, "offset": offset}).json()
            assert page["total"] == 230
            if not page["messages"]:
                break
            seen.extend(m["subject"] for m in page["messages"])
            offset += 50
        assert seen == [f"Issue {n:03d}" for n in range(229, -1, -1)]
        oldest = http.get("/api/messages", params={"q": "issue 002"}).json()
        assert [m["subject"] for m in oldest["messages"]] == ["Issue 002"]
        by_recipient = http.get("/api/messages", params={"q": "r1@EXAMPLE.org"}).json()
        assert [m["subject"] for m in by_recipient["messages"]] == ["Issue 001"]
        assert http.get("/api/messages", params={"q": "news@news.example.com"}).json()["total"] == 230
