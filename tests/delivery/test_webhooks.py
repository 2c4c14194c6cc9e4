"""Provider webhooks (newsletter/web/webhooks/, one module per provider): Amazon SES through SNS
(signature verified), Postmark, Mailgun and SendGrid, judged by the one table; a complaint
unsubscribes; an event acts only with the provider's proof *and* our own (a VERP token, or our
Message-ID for the address it names)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from newsletter.web.app import create_app
from tests.delivery.helpers import subscriber_status
from tests.delivery.reports import TOPIC, client_for, envelope_of, make_sns_key, sns_message


@pytest.fixture
def sns_key():
    return make_sns_key()


def ses_bounce(
    address: str,
    source: str,
    *,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 user unknown",
    message_id: str = "",
) -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bouncedRecipients": [
                {"emailAddress": address, "status": status, "diagnosticCode": diagnostic, "action": "failed"}
            ],
        },
        "mail": {"source": source, "commonHeaders": {"messageId": message_id}},
    }


def test_ses_bounces_act_only_when_signed_and_proven(world, sns_key):
    key, cert = sns_key
    world.configure(webhooks_ses_topic_arns=TOPIC)
    emails = world.add_subscribers(4)
    world.run("e1")
    client = client_for(world, cert)
    verp0, _ = envelope_of(world, emails[0])
    _, mid1 = envelope_of(world, emails[1])

    # Signed, with our VERP envelope sender: acts.
    r = client.post("/webhooks/ses", content=json.dumps(sns_message(key, ses_bounce(emails[0], verp0))))
    assert r.status_code == 200 and r.json()["results"] == [{"address": emails[0], "action": "suppressed"}]
    # Signed (v2), a DMARC refusal found by our Message-ID for that address: blocked, nobody suppressed.
    r = client.post(
        "/webhooks/ses",
        content=json.dumps(
            sns_message(
                key,
                ses_bounce(
                    emails[1],
                    "news@example.com",
                    status="5.7.26",
                    diagnostic="smtp; 550 5.7.26 DMARC policy",
                    message_id=mid1,
                ),
                version="2",
            )
        ),
    )
    assert r.json()["results"][0]["action"] == "blocked"
    # Signed but unproven (a stranger's Message-ID): unmatched.
    r = client.post(
        "/webhooks/ses",
        content=json.dumps(sns_message(key, ses_bounce(emails[2], "news@example.com", message_id=mid1))),
    )
    assert r.json()["results"][0]["action"] == "unmatched"
    # Tampered after signing: refused.
    forged = sns_message(key, ses_bounce(emails[3], verp0))
    forged["Message"] = json.dumps(ses_bounce(emails[3], verp0, status="5.1.1"))
    forged["Message"] = forged["Message"].replace("5.1.1", "5.1.2")
    assert client.post("/webhooks/ses", content=json.dumps(forged)).status_code == 403
    # A certificate from anywhere but sns.<region>.amazonaws.com: refused.
    elsewhere = sns_message(key, ses_bounce(emails[3], verp0))
    elsewhere["SigningCertURL"] = "https://attacker.example/sns.pem"
    assert client.post("/webhooks/ses", content=json.dumps(elsewhere)).status_code == 403
    assert [subscriber_status(world.store, e) for e in emails] == ["bounced", "active", "active", "active"]


def test_postmark_needs_its_secret_and_a_complaint_unsubscribes(world):
    world.configure(webhooks_postmark_secret="s3cret-postmark")
    emails = world.add_subscribers(3)
    world.run("e1")
    client = client_for(world)
    _, mid0 = envelope_of(world, emails[0])
    _, mid1 = envelope_of(world, emails[1])
    auth = {"Authorization": "Basic " + base64.b64encode(b"postmark:s3cret-postmark").decode()}
    complaint = {"RecordType": "SpamComplaint", "Email": emails[0], "Content": f"Message-ID: {mid0}\r\n"}
    assert client.post("/webhooks/postmark", json=complaint).status_code == 401
    assert (
        client.post(
            "/webhooks/postmark",
            json=complaint,
            headers={"Authorization": "Basic " + base64.b64encode(b"postmark:guess").decode()},
        ).status_code
        == 401
    )
    assert (
        client.post("/webhooks/postmark", json=complaint, headers=auth).json()["results"][0]["action"]
        == "unsubscribed"
    )
    full = {
        "RecordType": "Bounce",
        "Type": "SoftBounce",
        "Email": emails[1],
        "Details": "smtp;552 5.2.2 Mailbox full",
        "Content": f"Message-ID: {mid1}\r\n",
    }
    assert client.post("/webhooks/postmark", json=full, headers=auth).json()["results"][0]["action"] == "soft"
    assert [subscriber_status(world.store, e) for e in emails] == ["unsubscribed", "active", "active"]


def test_mailgun_checks_its_hmac_and_judges_by_the_table(world):
    world.configure(webhooks_mailgun_signing_key="mg-signing-key")
    emails = world.add_subscribers(3)
    world.run("e1")
    client = client_for(world)

    def signed(event_data: dict, key: str = "mg-signing-key") -> dict:
        ts, token = str(int(time.time())), uuid.uuid4().hex  # a new token per call, as Mailgun sends
        return {
            "signature": {
                "timestamp": ts,
                "token": token,
                "signature": hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest(),
            },
            "event-data": event_data,
        }

    def failed(email: str, code: int, enhanced: str, message: str) -> dict:
        _, mid = envelope_of(world, email)
        return {
            "event": "failed",
            "severity": "permanent",
            "recipient": email,
            "delivery-status": {"code": code, "enhanced-code": enhanced, "message": message},
            "message": {"headers": {"message-id": mid.strip("<>")}},
        }

    assert (
        client.post(
            "/webhooks/mailgun", json=signed(failed(emails[0], 550, "5.1.1", "No such user"), key="wrong")
        ).status_code
        == 403
    )
    assert (
        client.post("/webhooks/mailgun", json=signed(failed(emails[0], 550, "5.1.1", "No such user"))).json()[
            "results"
        ][0]["action"]
        == "suppressed"
    )
    assert (
        client.post(
            "/webhooks/mailgun", json=signed(failed(emails[1], 554, "5.7.1", "Message rejected as spam"))
        ).json()["results"][0]["action"]
        == "blocked"
    )
    assert [subscriber_status(world.store, e) for e in emails] == ["bounced", "active", "active"]


def test_sendgrid_checks_its_ecdsa_signature(world):
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    world.configure(webhooks_sendgrid_public_key=public)
    emails = world.add_subscribers(3)
    world.run("e1")
    client = client_for(world)
    _, mid0 = envelope_of(world, emails[0])
    _, mid1 = envelope_of(world, emails[1])
    body = json.dumps(
        [
            {
                "email": emails[0],
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 user unknown",
                "smtp-id": mid0,
            },
            {"email": emails[1], "event": "spamreport", "smtp-id": mid1},
            {
                "email": emails[2],
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 user unknown",
                "smtp-id": "<made-up@attacker.example>",
            },
        ]
    ).encode()
    ts = str(int(time.time()))
    signature = base64.b64encode(key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        "X-Twilio-Email-Event-Webhook-Signature": signature,
    }
    assert client.post("/webhooks/sendgrid", content=body + b" ", headers=headers).status_code == 403
    r = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert [x["action"] for x in r.json()["results"]] == ["suppressed", "unsubscribed", "unmatched"]
    assert [subscriber_status(world.store, e) for e in emails] == ["bounced", "unsubscribed", "active"]


def test_webhooks_are_mounted_and_closed_until_configured(world):
    client = TestClient(create_app(world.new_service()))
    for provider in ("ses", "postmark", "mailgun", "sendgrid"):
        assert client.post(f"/webhooks/{provider}", json={}).status_code == 404, provider
