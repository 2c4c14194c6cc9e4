"""Postmark bounce and spam-complaint webhooks.

The provider's proof is the HTTP basic-auth password in the webhook URL (user ``postmark``),
``webhooks.postmark_secret``. Each event's ``ID`` is remembered: the endpoint counts an
event once.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from newsletter.config import WebhookSettings
from newsletter.delivery.judgement import enhanced_status
from newsletter.web.webhooks.base import Event, Notice, content_key, read_body, smtp_code, strings


class Postmark:
    """``POST /webhooks/postmark``."""

    name = "postmark"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings

    def enabled(self) -> bool:
        return bool(self.settings.postmark_secret)

    async def receive(self, request: Request) -> Notice | Response:
        given = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"postmark:{self.settings.postmark_secret}".encode()).decode()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Response(
                "unauthorized", status_code=401, headers={"WWW-Authenticate": 'Basic realm="webhooks"'}
            )
        try:
            payload = json.loads(await read_body(request))
        except ValueError:
            return Response("not JSON", status_code=400)
        return Notice(events(payload if isinstance(payload, dict) else {}))


def events(payload: dict[str, Any]) -> list[Event]:
    record = str(payload.get("RecordType", ""))
    keys = [f"postmark:{record}:{payload['ID']}" if payload.get("ID") else content_key("postmark", payload)]
    proofs = list(strings({k: payload.get(k) for k in ("Metadata", "Headers", "Content", "MessageID")}))
    if record == "SpamComplaint":
        return [Event("complaint", str(payload.get("Email", "")), proofs=proofs, keys=keys)]
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
                smtp_code(details),
                details.strip(),
                permanent,
                proofs,
                keys,
            )
        ]
    return []
