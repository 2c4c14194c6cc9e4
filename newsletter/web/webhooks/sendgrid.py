"""SendGrid's signed event webhook: ``bounce``, ``dropped`` and ``spamreport`` events.

The provider's proof is an ECDSA (P-256, SHA-256) signature of timestamp and body under
``webhooks.sendgrid_public_key``, the timestamp within ``MAX_SKEW`` of now. Each event's
``sg_event_id`` (or, without one, its content and timestamp) is remembered: the endpoint
counts an event once.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import Response

from newsletter.config import WebhookSettings
from newsletter.web.webhooks.base import Event, Notice, content_key, fresh, read_body, smtp_code, strings


class Sendgrid:
    """``POST /webhooks/sendgrid``."""

    name = "sendgrid"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings

    def enabled(self) -> bool:
        return bool(self.settings.sendgrid_public_key)

    async def receive(self, request: Request) -> Notice | Response:
        body = await read_body(request)
        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp", "")
        signature = request.headers.get("x-twilio-email-event-webhook-signature", "")
        try:
            key = serialization.load_der_public_key(base64.b64decode(self.settings.sendgrid_public_key))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an ECDSA key")
            key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            return Response("bad signature", status_code=403)
        if not fresh(timestamp):
            return Response("stale", status_code=403)
        try:
            payload = json.loads(body)
        except ValueError:
            return Response("not JSON", status_code=400)
        return Notice(events(payload if isinstance(payload, list) else [], timestamp=timestamp))


def events(payload: list[Any], *, timestamp: str = "") -> list[Event]:
    out = []
    for e in payload:
        if not isinstance(e, dict):
            continue
        keys = [
            f"sendgrid:{e['sg_event_id']}" if e.get("sg_event_id") else content_key("sendgrid", timestamp, e)
        ]
        proofs = [
            str(e.get("smtp-id", "")),
            *strings(e.get("unique_args", {})),
            *[str(v) for k, v in e.items() if k.startswith("verp")],
        ]
        kind = str(e.get("event", ""))
        if kind == "spamreport":
            out.append(Event("complaint", str(e.get("email", "")), proofs=proofs, keys=keys))
        elif kind in ("bounce", "dropped"):
            reason = str(e.get("reason", ""))
            status = str(e.get("status", ""))
            if e.get("type") == "blocked" and not status.startswith("5.7"):
                reason = "blocked: " + reason
            out.append(
                Event("bounce", str(e.get("email", "")), status, smtp_code(reason), reason, True, proofs)
            )
    return out
