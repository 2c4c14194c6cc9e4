"""The console's "Send a test to me" and `send --test-to` sign as a send does, and check the key first.

Regression: the test send was a second message builder that went out unsigned and skipped
the DKIM key check a real send makes. Verified with dkimpy against nsd on loopback, as
test_dkim_send.py verifies the edition's mail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dkim
import pytest
from dkim_records import key_record
from starlette.testclient import TestClient
from test_dkim_send import GOOD_ZONE_EXTRA, dkimpy_lookup, key_env

from newsletter.admin.app import create_console
from newsletter.delivery.dkim_keys import DkimKey, generate_key
from newsletter.editions.preview import send_test
from newsletter.errors import ConfigError
from newsletter.models import SubscriberStatus
from newsletter.web.app import create_app
from tests.admin.helpers import Operator, make_users


def test_console_test_send_is_signed_with_every_key_and_its_one_click_is_harmless(
    make_service: Any, sink: Any, tmp_path: Path, dns_zone: Any, ed_key: DkimKey, rsa_key: DkimKey
) -> None:
    server = dns_zone([key_record(ed_key), key_record(rsa_key), *GOOD_ZONE_EXTRA])
    service = make_service(**key_env(tmp_path, ed_key, rsa_key, server=server))
    service.store.subscribers.add_subscriber(email="ana@example.org")
    make_users(service)
    app = create_console(service, dev=True)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        console = Operator(service, app, client)
        console.login("editor@console.example.org")
        sent = console.post(
            "/admin/preview/test",
            {"email": "ana@example.org"},
            csrf_from="/admin/preview?email=ana@example.org",
        )
        assert sent.status_code == 303, sent.text
    [message] = sink.wait_for(to="editor@console.example.org", timeout=5)
    raw = message.raw
    assert len(re.findall(rb"(?im)^DKIM-Signature:", raw)) == 2
    lookup = dkimpy_lookup(server)
    assert dkim.DKIM(raw).verify(0, dnsfunc=lookup) and dkim.DKIM(raw).verify(1, dnsfunc=lookup)
    mail = message.as_email()
    assert str(mail["Subject"]).startswith("[Test] ")
    url = str(mail["List-Unsubscribe"]).strip("<>")
    with TestClient(create_app(service), follow_redirects=False) as web:
        answer = web.post(
            "/" + url.split("://", 1)[1].split("/", 1)[1], data={"List-Unsubscribe": "One-Click"}
        )
    assert answer.status_code == 200 and "changes nothing" in answer.text
    ana = service.store.subscribers.find_subscriber("ana@example.org")
    assert ana is not None and ana.status is SubscriberStatus.ACTIVE


def test_test_send_refuses_a_key_dns_does_not_publish_before_any_mail(
    make_service: Any, sink: Any, tmp_path: Path, dns_zone: Any, ed_key: DkimKey
) -> None:
    other = DkimKey(ed_key.selector, generate_key("ed25519"))
    server = dns_zone([key_record(other), *GOOD_ZONE_EXTRA])
    service = make_service(**key_env(tmp_path, ed_key, server=server))
    service.store.subscribers.add_subscriber(email="ana@example.org")
    with pytest.raises(ConfigError) as caught:
        send_test(service.runner, to_address="editor@example.org", email="ana@example.org")
    assert "key mismatch" in caught.value.message
    assert sink.messages() == []
