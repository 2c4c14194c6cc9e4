"""The console's and the API's test send: the real message for a reader, marked "[Test]", harmless.

Regression: the test was a second message builder. Its List-Unsubscribe led to a page whose
RFC 8058 one-click POST answered 400, its envelope sender was plain, and it went out unsigned
without the DKIM key check a send makes (the signed path: tests/dkim/test_dkim_test_send.py).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from newsletter.models import SubscriberStatus
from newsletter.web.app import create_app

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def one_click(service: Any, mail: Any) -> Any:
    """What a mailbox provider does with the message's one-click header: POST to its URI."""
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<([^>]+)>", str(mail["List-Unsubscribe"]))
    assert url, mail["List-Unsubscribe"]
    path = "/" + url.group(1).split("://", 1)[1].split("/", 1)[1]
    with TestClient(create_app(service), follow_redirects=False) as web:
        return web.post(path, data=ONE_CLICK)


def test_console_test_send_is_the_readers_message_and_its_one_click_changes_nothing(
    signed_in: Any, sink: Any
) -> None:
    console = signed_in("editor")
    r = console.post(
        "/admin/preview/test", {"email": "ana@example.org"}, csrf_from="/admin/preview?email=ana@example.org"
    )
    assert r.status_code == 303
    [message] = sink.wait_for(to="editor@console.example.org", timeout=5)
    mail = message.as_email()
    preview = console.engine.preview("ana@example.org")
    assert str(mail["Subject"]) == f"[Test] {preview.subject}"
    assert message.mail_from.startswith("bounces+")  # a VERP envelope, as a send's
    assert mail["X-Newsletter-Edition"] == "test"
    checks = {c.name: c.status for c in message.checks}
    assert checks.get("list-unsubscribe", "pass") == "pass", message.checks
    answer = one_click(console.service, mail)
    assert answer.status_code == 200 and "changes nothing" in answer.text
    ana = console.service.store.subscribers.find_subscriber("ana@example.org")
    assert ana is not None and ana.status is SubscriberStatus.ACTIVE
    assert console.service.store.editions.list_editions() == []


def test_api_test_send_arrives_marked_and_its_one_click_changes_nothing(signed_in: Any, sink: Any) -> None:
    console = signed_in("editor")
    made = console.post("/admin/tokens/new", {"name": "ci"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    sent = console.client.post("/api/v1/test-send", json={"email": "ben@example.org"}, headers=auth)
    assert sent.status_code == 200, sent.text
    [message] = sink.wait_for(to="editor@console.example.org", timeout=5)
    mail = message.as_email()
    assert str(mail["Subject"]).startswith("[Test] ")
    assert one_click(console.service, mail).status_code == 200
    ben = console.service.store.subscribers.find_subscriber("ben@example.org")
    assert ben is not None and ben.status is SubscriberStatus.ACTIVE
