"""Provider webhooks: bounce and complaint notifications from Amazon SES (via SNS), Postmark,
Mailgun and SendGrid, judged by the same table as SMTP replies and DSNs.

Two locks on every event:

1. **The provider's own proof**, checked first: SNS message signatures (the signing
   certificate fetched only from ``https://sns.<region>.amazonaws.com/``, the topic one of
   ``webhooks.ses_topic_arns``), Postmark's HTTP basic-auth secret, Mailgun's HMAC of
   timestamp and token, SendGrid's ECDSA signature of timestamp and body. An endpoint whose
   secret is not configured answers 404.
2. **Our own proof**, as for mailed reports (``BounceProcessor.authenticate``): an event
   acts only when it carries a VERP token that verifies (SES reports the envelope sender) or
   our Message-ID of the outbox row *of the address it names*. Anything else changes nobody.

A bounce is judged from its status, SMTP code and diagnostic; a complaint unsubscribes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.delivery.bounces import VERP_RE, BounceProcessor
from newsletter.delivery.judgement import enhanced_status
from newsletter.service import Service

log = logging.getLogger("newsletter.web.webhooks")

MAX_BODY = 256 * 1024
MAX_SKEW = 600  # seconds a signed timestamp may be off (Mailgun, SendGrid)
SNS_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
MESSAGE_ID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
CertFetcher = Callable[[str], bytes]


@dataclass
class Event:
    """One provider event, reduced to what the judgement and the proof need."""

    kind: str  # bounce | complaint | other
    address: str
    status: str = ""
    code: int | None = None
    diagnostic: str = ""
    permanent: bool = True
    proofs: list[str] = field(default_factory=list)  # strings that may hold a VERP address or our Message-ID


@dataclass(frozen=True)
class Outcome:
    address: str
    action: str  # suppressed | soft | blocked | sender | unsubscribed | unmatched | ignored


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (headers, metadata): where a token or Message-ID may hide."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _code(text: Any) -> int | None:
    match = re.search(r"\b([245]\d\d)\b", str(text or ""))
    return int(match.group(1)) if match else None


class Webhooks:
    """The endpoints; ``fetch_cert`` gets an SNS signing certificate (tests hand in their own)."""

    def __init__(self, service: Service, *, fetch_cert: CertFetcher | None = None) -> None:
        self.service = service
        self.settings = service.settings.webhooks
        self.fetch_cert = fetch_cert or _fetch_https
        self._certs: dict[str, bytes] = {}
        store = service.store
        self.processor = BounceProcessor(
            store.outbox, store.subscribers, service.signer, service.runner.suppressor()
        )

    def routes(self) -> list[Route]:
        return [
            Route("/webhooks/ses", self.ses, methods=["POST"]),
            Route("/webhooks/postmark", self.postmark, methods=["POST"]),
            Route("/webhooks/mailgun", self.mailgun, methods=["POST"]),
            Route("/webhooks/sendgrid", self.sendgrid, methods=["POST"]),
        ]

    # -- acting ----------------------------------------------------------------------

    def apply(self, events: Iterable[Event], source: str) -> list[Outcome]:
        outcomes = []
        for event in events:
            outcomes.append(Outcome(event.address, self._apply_one(event, source)))
        for o in outcomes:
            log.info("%s webhook: %s %s", source, o.address, o.action)
        return outcomes

    def _apply_one(self, event: Event, source: str) -> str:
        if event.kind not in ("bounce", "complaint") or not event.address:
            return "ignored"
        verps = [s for s in event.proofs if VERP_RE.search(s)]
        message_ids = [m for s in event.proofs for m in MESSAGE_ID_RE.findall(s)]
        row = self.processor.authenticate(None, verps, [event.address.lower()])
        for message_id in message_ids:
            if row is not None:
                break
            row = self.processor.authenticate(None, [], [event.address.lower()], message_id=message_id)
        if row is None:
            return "unmatched"
        suppressor = self.processor.suppressor
        if event.kind == "complaint":
            suppressor.complaint(
                subscriber_id=row.subscriber_id,
                delivery_id=row.id,
                reason=f"complaint reported by {source}",
                source=source[:20],
            )
            return "unsubscribed"
        if not event.permanent and not event.status.startswith("5"):
            return "ignored"  # the provider still retries: like a delayed DSN
        judgement = suppressor.record(
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
            code=event.code,
            reply=f"{event.status} {event.diagnostic}".strip(),
            source=source[:20],
            stage="dsn",
            status=event.status,
        )
        return {"bad_address": "suppressed"}.get(judgement.verdict.value, judgement.verdict.value)

    async def _respond(self, events: list[Event], source: str) -> Response:
        outcomes = await run_in_threadpool(self.apply, events, source)
        return JSONResponse({"results": [{"address": o.address, "action": o.action} for o in outcomes]})

    # -- Amazon SES through SNS ------------------------------------------------------------

    async def ses(self, request: Request) -> Response:
        if not self.settings.ses_topic_arns:
            return Response(status_code=404)
        body = await _body(request)
        try:
            message = json.loads(body)
        except ValueError:
            return Response("not JSON", status_code=400)
        if not isinstance(message, dict) or message.get("TopicArn") not in self.settings.ses_topic_arns.split(
            ","
        ):
            return Response("unknown topic", status_code=403)
        if not await run_in_threadpool(self.sns_signature_valid, message):
            return Response("bad signature", status_code=403)
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
        return await self._respond(ses_events(notification), "ses")

    def sns_signature_valid(self, message: dict[str, Any]) -> bool:
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
            if cert_url not in self._certs:
                self._certs[cert_url] = self.fetch_cert(cert_url)
            key = x509.load_pem_x509_certificate(self._certs[cert_url]).public_key()
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

    # -- Postmark ----------------------------------------------------------------------

    async def postmark(self, request: Request) -> Response:
        secret = self.settings.postmark_secret
        if not secret:
            return Response(status_code=404)
        given = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"postmark:{secret}".encode()).decode()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Response(
                "unauthorized", status_code=401, headers={"WWW-Authenticate": 'Basic realm="webhooks"'}
            )
        try:
            payload = json.loads(await _body(request))
        except ValueError:
            return Response("not JSON", status_code=400)
        return await self._respond(postmark_events(payload if isinstance(payload, dict) else {}), "postmark")

    # -- Mailgun -----------------------------------------------------------------------

    async def mailgun(self, request: Request) -> Response:
        key = self.settings.mailgun_signing_key
        if not key:
            return Response(status_code=404)
        try:
            payload = json.loads(await _body(request))
            signature = payload["signature"]
            timestamp, token, given = (
                str(signature["timestamp"]),
                str(signature["token"]),
                str(signature["signature"]),
            )
        except (ValueError, KeyError, TypeError):
            return Response("not a Mailgun event", status_code=400)
        expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given) or not _fresh(timestamp):
            return Response("bad signature", status_code=403)
        return await self._respond(mailgun_events(payload.get("event-data") or {}), "mailgun")

    # -- SendGrid ----------------------------------------------------------------------

    async def sendgrid(self, request: Request) -> Response:
        public_key = self.settings.sendgrid_public_key
        if not public_key:
            return Response(status_code=404)
        body = await _body(request)
        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp", "")
        signature = request.headers.get("x-twilio-email-event-webhook-signature", "")
        try:
            key = serialization.load_der_public_key(base64.b64decode(public_key))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an ECDSA key")
            key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            return Response("bad signature", status_code=403)
        if not _fresh(timestamp):
            return Response("stale", status_code=403)
        try:
            payload = json.loads(body)
        except ValueError:
            return Response("not JSON", status_code=400)
        return await self._respond(sendgrid_events(payload if isinstance(payload, list) else []), "sendgrid")


# -- payloads to events ----------------------------------------------------------------------


def ses_events(notification: dict[str, Any]) -> list[Event]:
    kind = str(notification.get("notificationType") or notification.get("eventType") or "").lower()
    mail = notification.get("mail") or {}
    proofs = [
        str(mail.get("source", "")),
        *_strings(mail.get("headers", [])),
        *_strings(mail.get("commonHeaders", {})),
    ]
    if kind == "bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        return [
            Event(
                "bounce",
                str(r.get("emailAddress", "")),
                str(r.get("status", "")),
                _code(r.get("diagnosticCode")),
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


def postmark_events(payload: dict[str, Any]) -> list[Event]:
    record = str(payload.get("RecordType", ""))
    proofs = list(_strings({k: payload.get(k) for k in ("Metadata", "Headers", "Content", "MessageID")}))
    if record == "SpamComplaint":
        return [Event("complaint", str(payload.get("Email", "")), proofs=proofs)]
    if record == "Bounce":
        kind = str(payload.get("Type", ""))
        # Postmark reports a SoftBounce once it has stopped retrying; Transient is a delay notice.
        permanent = kind != "Transient"
        details = (str(payload.get("Details", "")) + " " + str(payload.get("Description", ""))).strip()
        status = enhanced_status(details)
        if not status and kind in ("HardBounce", "BadEmailAddress"):
            status = "5.1.1"
        elif not status and kind in ("Blocked", "SpamNotification", "DMARCPolicy"):
            status = "5.7.1"
        return [
            Event(
                "bounce",
                str(payload.get("Email", "")),
                status,
                _code(details),
                details.strip(),
                permanent,
                proofs,
            )
        ]
    return []


def mailgun_events(data: dict[str, Any]) -> list[Event]:
    event = str(data.get("event", ""))
    message = data.get("message") or {}
    proofs = list(_strings(message.get("headers", {})))
    message_id = str((message.get("headers") or {}).get("message-id", "")).strip()
    if message_id and not message_id.startswith("<"):
        proofs.append(f"<{message_id}>")  # Mailgun reports the Message-ID without its angle brackets
    if event == "complained":
        return [Event("complaint", str(data.get("recipient", "")), proofs=proofs)]
    if event == "failed":
        status_info = data.get("delivery-status") or {}
        text = " ".join(str(status_info.get(k, "")) for k in ("enhanced-code", "message", "description"))
        return [
            Event(
                "bounce",
                str(data.get("recipient", "")),
                str(status_info.get("enhanced-code", "")),
                _code(status_info.get("code")),
                text.strip(),
                data.get("severity") == "permanent",
                proofs,
            )
        ]
    return []


def sendgrid_events(events: list[Any]) -> list[Event]:
    out = []
    for e in events:
        if not isinstance(e, dict):
            continue
        proofs = [
            str(e.get("smtp-id", "")),
            *_strings(e.get("unique_args", {})),
            *[str(v) for k, v in e.items() if k.startswith("verp")],
        ]
        kind = str(e.get("event", ""))
        if kind == "spamreport":
            out.append(Event("complaint", str(e.get("email", "")), proofs=proofs))
        elif kind in ("bounce", "dropped"):
            reason = str(e.get("reason", ""))
            status = str(e.get("status", ""))
            if e.get("type") == "blocked" and not status.startswith("5.7"):
                reason = "blocked: " + reason
            out.append(Event("bounce", str(e.get("email", "")), status, _code(reason), reason, True, proofs))
    return out


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            break
    return body[:MAX_BODY]


def _fresh(timestamp: str) -> bool:
    try:
        return abs(time.time() - float(timestamp)) <= MAX_SKEW
    except ValueError:
        return False


def _fetch_https(url: str) -> bytes:
    import httpx

    response = httpx.get(url, timeout=10, follow_redirects=False)
    response.raise_for_status()
    return response.content


def webhook_routes(service: Service, *, fetch_cert: CertFetcher | None = None) -> list[Route]:
    """The webhook routes for ``create_app``."""
    return Webhooks(service, fetch_cert=fetch_cert).routes()
