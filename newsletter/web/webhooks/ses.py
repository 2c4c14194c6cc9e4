"""Amazon SES bounce and complaint notifications, delivered by SNS.

The provider's proof is the SNS message signature: the signing certificate is fetched only
from ``https://sns.<region>.amazonaws.com/...pem``, and the topic must be one of
``webhooks.ses_topic_arns``. A message whose signed ``Timestamp`` is more than
``SES_MAX_AGE`` old (or ahead of now) is refused, and each notification's ``MessageId`` is
remembered (the endpoint counts an event once), so a captured notification cannot be
replayed. Certificates are cached, at most ``CERT_CACHE`` of them for ``CERT_TTL``.
SES reports the envelope sender (our VERP address) as ``mail.source``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from newsletter.config import WebhookSettings
from newsletter.web.webhooks.base import MAX_SKEW, Event, Notice, read_body, smtp_code, strings

log = logging.getLogger("newsletter.web.webhooks")

SNS_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
# SNS retries an HTTPS delivery for at most about an hour under its own policy; a day is ample.
SES_MAX_AGE = 24 * 3600
CERT_CACHE = 8  # SNS signs with one certificate per region at a time
CERT_TTL = 24 * 3600
CertFetcher = Callable[[str], bytes]


class Ses:
    """``POST /webhooks/ses``; ``fetch_cert`` gets an SNS signing certificate (tests hand in their own)."""

    name = "ses"

    def __init__(self, settings: WebhookSettings, *, fetch_cert: CertFetcher | None = None) -> None:
        self.settings = settings
        self.fetch_cert = fetch_cert or _fetch_https
        self._certs: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._certs_lock = threading.Lock()

    def enabled(self) -> bool:
        return bool(self.settings.ses_topic_arns)

    async def receive(self, request: Request) -> Notice | Response:
        body = await read_body(request)
        try:
            message = json.loads(body)
        except ValueError:
            return Response("not JSON", status_code=400)
        if not isinstance(message, dict) or message.get("TopicArn") not in self.settings.ses_topic_arns.split(
            ","
        ):
            return Response("unknown topic", status_code=403)
        if not await run_in_threadpool(self.signature_valid, message):
            return Response("bad signature", status_code=403)
        if not recent(str(message.get("Timestamp", ""))):
            return Response("stale", status_code=403)
        if message.get("Type") == "SubscriptionConfirmation":
            # Confirming means fetching SubscribeURL; an operator does it once, on purpose.
            log.warning(
                "SNS subscription for %s awaits confirmation: open %s",
                message.get("TopicArn"),
                message.get("SubscribeURL"),
            )
            return JSONResponse({"confirm": message.get("SubscribeURL", "")})
        if message.get("Type") != "Notification":
            return JSONResponse({"results": []})
        try:
            notification = json.loads(message.get("Message", ""))
        except ValueError:
            return Response("bad notification", status_code=400)
        found = events(notification if isinstance(notification, dict) else {})
        for event in found:
            event.keys = [f"ses:{message.get('MessageId', '')}:{event.address.lower()}"]
        return Notice(found)

    def signature_valid(self, message: dict[str, Any]) -> bool:
        cert_url = str(message.get("SigningCertURL", ""))
        url = urlparse(cert_url)
        if (
            url.scheme != "https"
            or not SNS_CERT_HOST.match(url.hostname or "")
            or not url.path.endswith(".pem")
        ):
            return False
        if message.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        else:
            keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
        algorithm: hashes.HashAlgorithm = (
            hashes.SHA256() if str(message.get("SignatureVersion")) == "2" else hashes.SHA1()
        )  # SNS v1 is SHA1withRSA
        try:
            key = x509.load_pem_x509_certificate(self.certificate(cert_url)).public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(
                base64.b64decode(str(message.get("Signature", ""))),
                text.encode(),
                padding.PKCS1v15(),
                algorithm,
            )
        except (InvalidSignature, ValueError, binascii.Error, OSError):
            return False
        return True

    def certificate(self, url: str) -> bytes:
        """The PEM at ``url``, fetched once and kept for ``CERT_TTL`` among the last ``CERT_CACHE``."""
        now = time.monotonic()
        with self._certs_lock:
            cached = self._certs.get(url)
            if cached is not None and now - cached[0] < CERT_TTL:
                self._certs.move_to_end(url)
                return cached[1]
        pem = self.fetch_cert(url)
        with self._certs_lock:
            self._certs[url] = (now, pem)
            self._certs.move_to_end(url)
            while len(self._certs) > CERT_CACHE:
                self._certs.popitem(last=False)
        return pem

    @property
    def cached_certificates(self) -> int:
        return len(self._certs)


def recent(timestamp: str) -> bool:
    """An SNS ``Timestamp`` (ISO 8601, UTC) no older than ``SES_MAX_AGE`` and not ahead of now."""
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        return False
    age = time.time() - when.timestamp()
    return -MAX_SKEW <= age <= SES_MAX_AGE


def events(notification: dict[str, Any]) -> list[Event]:
    kind = str(notification.get("notificationType") or notification.get("eventType") or "").lower()
    mail = notification.get("mail") or {}
    proofs = [
        str(mail.get("source", "")),
        *strings(mail.get("headers", [])),
        *strings(mail.get("commonHeaders", {})),
    ]
    if kind == "bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        return [
            Event(
                "bounce",
                str(r.get("emailAddress", "")),
                str(r.get("status", "")),
                smtp_code(r.get("diagnosticCode")),
                str(r.get("diagnosticCode", "")),
                permanent,
                proofs,
            )
            for r in bounce.get("bouncedRecipients") or []
        ]
    if kind == "complaint":
        return [
            Event("complaint", str(r.get("emailAddress", "")), proofs=proofs)
            for r in (notification.get("complaint") or {}).get("complainedRecipients") or []
        ]
    return []


def _fetch_https(url: str) -> bytes:
    import httpx

    response = httpx.get(url, timeout=10, follow_redirects=False)
    response.raise_for_status()
    return response.content
