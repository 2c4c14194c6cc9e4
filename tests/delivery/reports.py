"""Reports as the outside world sends them, for the delivery tests: DSNs (RFC 3464, RFC 6533), ARF
complaints (RFC 5965), and provider webhook requests signed as each provider signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter.delivery.bounces import BounceProcessor
from newsletter.web.webhooks import Webhooks

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"


def dsn(*, recipient: str, message_id: str, action: str, status: str, diagnostic: str = "") -> bytes:
    """A multipart/report DSN as an MTA writes it (RFC 3464), CRLF line ends."""
    boundary = "dsn-boundary-42"
    lines = [
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>",
        "To: <bounces@example.com>",
        "Subject: Delivery Status Notification",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Delivery to {recipient}: {action}.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.net",
        "Arrival-Date: Thu, 1 Jan 2026 10:00:00 +0000",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        *([f"Diagnostic-Code: smtp; {diagnostic}"] if diagnostic else []),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        "From: Video Surveillance News <news@example.com>",
        f"To: {recipient}",
        f"Message-ID: {message_id}",
        "Subject: Your digest",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()


def auto_reply(recipient: str) -> bytes:
    return "\r\n".join(
        [
            f"From: {recipient}",
            "To: <bounces@example.com>",
            "Subject: Out of office",
            "Auto-Submitted: auto-replied",
            "",
            "I am away until Monday.",
            "",
        ]
    ).encode()


def envelope_of(world, email: str) -> tuple[str, str]:
    """(VERP envelope sender, Message-ID) of the digest the sink received for ``email``."""
    [message] = [m for m in world.sink.messages() if m.rcpt_tos == (email,)]
    return message.mail_from, str(message.headers["Message-ID"])


def processor(world) -> BounceProcessor:
    service = world.service
    return BounceProcessor(
        service.store.outbox, service.store.subscribers, service.signer, service.runner.suppressor()
    )


def global_dsn(*, recipient: str, message_id: str, status: str = "5.1.1") -> bytes:
    """A DSN for SMTPUTF8 mail as Postfix writes it (RFC 6533): global report parts, UTF-8 fields,
    and Auto-Submitted: auto-replied in the headers."""
    boundary = "global-dsn-7"
    lines = [
        "From: MAILER-DAEMON@relay.example.net (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        "To: bounces@example.com",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=global-delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "I'm sorry to have to inform you that your message could not be delivered. — postfix",
        "",
        f"--{boundary}",
        "Content-Type: message/global-delivery-status",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Reporting-MTA: dns; relay.example.net",
        "X-Postfix-Sender: utf-8; bounces+x@example.com",
        "",
        f"Final-Recipient: utf-8; {recipient}",
        f"Original-Recipient: utf-8; {recipient}",
        "Action: failed",
        f"Status: {status}",
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown",
        "",
        f"--{boundary}",
        "Content-Type: message/global-headers",
        "Content-Transfer-Encoding: 8bit",
        "",
        "From: Video Surveillance News <news@example.com>",
        f"To: {recipient}",
        f"Message-ID: {message_id}",
        "Subject: Übersicht",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def arf(*, recipient: str, message_id: str, return_path: str = "") -> bytes:
    """An ARF feedback report (RFC 5965) as a mailbox provider's feedback loop sends it."""
    boundary = "arf-1"
    return "\r\n".join(
        [
            "From: fbl@mailbox.example",
            "Subject: FW: Your digest",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
            "",
            f"--{boundary}",
            "Content-Type: text/plain",
            "",
            "This is an email abuse report.",
            f"--{boundary}",
            "Content-Type: message/feedback-report",
            "",
            "Feedback-Type: abuse",
            "User-Agent: SomeFBL/1.0",
            "Version: 1",
            f"Original-Rcpt-To: {recipient}",
            "",
            f"--{boundary}",
            "Content-Type: message/rfc822",
            "",
            *([f"Return-Path: <{return_path}>"] if return_path else []),
            "From: news@example.com",
            f"To: {recipient}",
            f"Message-ID: {message_id}",
            "Subject: Your digest",
            "",
            "body",
            f"--{boundary}--",
            "",
        ]
    ).encode()


def make_sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An SNS signing key and its self-signed certificate (PEM), as fetched from CERT_URL."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def client_for(world, sns_cert: bytes | None = None) -> TestClient:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        assert sns_cert is not None
        return sns_cert

    hooks = Webhooks(world.new_service(), fetch_cert=fetch)
    return TestClient(Starlette(routes=hooks.routes()))


def sns_message(
    key, notification: dict, *, version: str = "1", message_id: str = "", timestamp: datetime | None = None
) -> dict:
    """An SNS notification signed as SNS signs it; a fresh MessageId and the current time unless given."""
    when = timestamp or datetime.now(UTC)
    message = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": json.dumps(notification),
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
    }
    text = "".join(f"{k}\n{message[k]}\n" for k in ("Message", "MessageId", "Timestamp", "TopicArn", "Type"))
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    message["Signature"] = base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), algorithm)).decode()
    return message


def mailgun_signed(event_data: dict, key: str, *, token: str = "a" * 50, timestamp: str = "") -> dict:
    """A Mailgun webhook body: the HMAC of timestamp and token under the signing key."""
    ts = timestamp or str(int(time.time()))
    return {
        "signature": {
            "timestamp": ts,
            "token": token,
            "signature": hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest(),
        },
        "event-data": event_data,
    }


def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A SendGrid verification key pair: (private key, the public key as configured)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    return key, public


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, *, timestamp: str = "") -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    signature = base64.b64encode(key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        "X-Twilio-Email-Event-Webhook-Signature": signature,
    }


def postmark_auth(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"postmark:{secret}".encode()).decode()}
