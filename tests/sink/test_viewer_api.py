"""The viewer pages and every JSON API route, against the live sink over real HTTP."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sink_samples import build, wire

from newsletter.sink.checks import CHECK_NAMES
from newsletter.sink.server import SinkServer


@pytest.fixture
def live(maildir: Path) -> Iterator[SinkServer]:
    with SinkServer(maildir=maildir, http_port=0) as sink:
        yield sink


@pytest.fixture
def http(live: SinkServer) -> Iterator[httpx.Client]:
    assert live.http_url is not None
    # A script using the API: it sends the sink's token (printed at start), as it must to change anything.
    with httpx.Client(
        base_url=live.http_url, timeout=15, trust_env=False, headers={"X-Sink-Token": live.token}
    ) as client:
        yield client


def send(sink: SinkServer, *, to: str = "reader@example.org", subject: str = "Weekly") -> str:
    with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as client:
        client.sendmail("news@news.example.com", [to], wire(build(to=to, subject=subject)))
    return sink.wait_for(to=to, subject=subject)[0].id


def test_viewer_binds_to_the_sink_host(live: SinkServer) -> None:
    assert live.http_port and live.http_port != live.smtp_port
    assert live.http_url == f"http://127.0.0.1:{live.http_port}"


def test_list_and_filters_and_paging(live: SinkServer, http: httpx.Client) -> None:
    for n in range(3):
        send(live, to=f"r{n}@example.org", subject=f"Issue {n}")
    data = http.get("/api/messages").json()
    assert data["total"] == 3
    assert [m["subject"] for m in data["messages"]] == ["Issue 2", "Issue 1", "Issue 0"]
    assert [
        m["subject"] for m in http.get("/api/messages", params={"to": "r1@example.org"}).json()["messages"]
    ] == ["Issue 1"]
    assert http.get("/api/messages", params={"subject": "issue 0"}).json()["total"] == 1
    assert http.get("/api/messages", params={"from": "news@news.example.com"}).json()["total"] == 3
    page = http.get("/api/messages", params={"limit": 1, "offset": 1}).json()
    assert [m["subject"] for m in page["messages"]] == ["Issue 1"] and page["total"] == 3
    oldest = data["messages"][-1]["received_at"]
    assert http.get("/api/messages", params={"since": oldest}).json()["total"] == 2
    bad = http.get("/api/messages", params={"since": "last tuesday"})
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]
    assert http.get("/api/messages", params={"limit": 0}).status_code == 400


def test_message_detail_raw_and_delete(live: SinkServer, http: httpx.Client) -> None:
    msg_id = send(live)
    detail = http.get(f"/api/messages/{msg_id}").json()
    assert detail["mail_from"] == "news@news.example.com"
    assert detail["rcpt_tos"] == ["reader@example.org"]
    assert ["List-Unsubscribe-Post", "List-Unsubscribe=One-Click"] in detail["headers"]
    assert "Axis" in detail["text"] and "<a href" in detail["html"]
    assert [c["name"] for c in detail["checks"]] == list(CHECK_NAMES)
    raw = http.get(f"/api/messages/{msg_id}/raw")
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == live.get(msg_id).raw
    download = http.get(f"/api/messages/{msg_id}/raw", params={"download": 1})
    assert download.headers["content-disposition"] == f'attachment; filename="{msg_id}.eml"'
    assert http.delete(f"/api/messages/{msg_id}").status_code == 204
    assert http.delete(f"/api/messages/{msg_id}").status_code == 404
    missing = http.get(f"/api/messages/{msg_id}")
    assert missing.status_code == 404 and "no message" in missing.json()["error"]


def test_delete_all(live: SinkServer, http: httpx.Client) -> None:
    send(live, subject="a")
    send(live, subject="b")
    assert http.delete("/api/messages").json() == {"deleted": 2, "kept_foreign": 0}
    assert live.messages() == []


def test_wait_returns_a_message_that_arrives_later(live: SinkServer, http: httpx.Client) -> None:
    result: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: result.append(http.get("/api/wait", params={"to": "later@example.org", "timeout": 10}))
    )
    waiter.start()
    send(live, to="later@example.org", subject="Arrived")
    waiter.join(15)
    assert result and result[0].status_code == 200
    assert result[0].json()["subject"] == "Arrived"


def test_wait_times_out_with_408(http: httpx.Client) -> None:
    response = http.get("/api/wait", params={"to": "nobody@example.org", "timeout": 0.2})
    assert response.status_code == 408
    assert http.get("/api/wait", params={"timeout": "soon"}).status_code == 400


def test_faults_api(live: SinkServer, http: httpx.Client) -> None:
    assert http.get("/api/faults").json() == {"rules": [], "close_after": None}
    created = http.post("/api/faults", json={"spec": "rcpt:550 5.1.1 No such user:to=*@bad.example"})
    assert created.status_code == 201
    assert http.post("/api/faults", json={"stage": "data", "code": 451, "every": 2}).status_code == 201
    assert http.post("/api/faults", json={"close_after": 5}).status_code == 201
    listed = http.get("/api/faults").json()
    assert [r["code"] for r in listed["rules"]] == [550, 451] and listed["close_after"] == 5
    with smtplib.SMTP(live.host, live.smtp_port) as client:
        refused = client.sendmail(
            "a@example.com", ["x@bad.example", "y@good.example"], b"Subject: t\r\n\r\nx\r\n"
        )
    assert refused == {"x@bad.example": (550, b"5.1.1 No such user")}
    bad = http.post("/api/faults", json={"stage": "data", "code": 250})
    assert bad.status_code == 400 and "400-599" in bad.json()["error"]
    assert http.post("/api/faults", content=b"not json").status_code == 400
    assert http.delete("/api/faults").json() == {"rules": [], "close_after": None}
    assert live.faults.rules == []


def test_list_page(live: SinkServer, http: httpx.Client) -> None:
    send(live)
    page = http.get("/")
    assert page.status_code == 200
    assert '<table id="messages">' in page.text and "/assets/list.js" in page.text
    assert "/api/messages" in http.get("/assets/list.js").text


def test_message_page_and_sandboxed_html(live: SinkServer, http: httpx.Client) -> None:
    msg_id = send(live, subject="Page <b>test</b>")
    page = http.get(f"/messages/{msg_id}").text
    assert "Page &lt;b&gt;test&lt;/b&gt;" in page  # escaped, never interpreted
    assert page.count("sandbox=''") == 2 and "width='600'" in page and "width='375'" in page
    assert "data-check='list-unsubscribe'" in page and "id='text-part'" in page
    body = http.get(f"/messages/{msg_id}/body.html")
    assert "script-src" not in body.headers["content-security-policy"]  # default-src 'none' covers scripts
    assert body.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert "Axis launches" in body.text
    eml = http.get(f"/messages/{msg_id}.eml")
    assert eml.content == live.get(msg_id).raw and "attachment" in eml.headers["content-disposition"]
    assert http.get("/messages/nope").status_code == 404


def test_delete_buttons(live: SinkServer, http: httpx.Client) -> None:
    first = send(live, subject="one")
    send(live, subject="two")
    response = http.post(f"/messages/{first}/delete")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert [m.subject for m in live.messages()] == ["two"]
    assert http.post("/messages/delete-all").status_code == 303
    assert live.messages() == []
