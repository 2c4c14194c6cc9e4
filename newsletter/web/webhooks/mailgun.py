"""Mailgun ``failed`` and ``complained`` events.

The provider's proof is an HMAC-SHA256 of timestamp and token under
``webhooks.mailgun_signing_key``, the timestamp within ``MAX_SKEW`` of now. Its token and
event id are remembered (the endpoint counts an event once), as Mailgun advises against
replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from newsletter.config import WebhookSettings
from newsletter.web.webhooks.base import Event, Notice, fresh, read_body, smtp_code, strings


class Mailgun:
    """``POST /webhooks/mailgun``."""

    name = "mailgun"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings

    def enabled(self) -> bool:
        return bool(self.settings.mailgun_signing_key)

    async def receive(self, request: Request) -> Notice | Response:
        key = self.settings.mailgun_signing_key
        try:
            payload = json.loads(await read_body(request))
            signature = payload["signature"]
            timestamp, token, given = (
                str(signature["timestamp"]),
                str(signature["token"]),
                str(signature["signature"]),
            )
        except (ValueError, KeyError, TypeError):
            return Response("not a Mailgun event", status_code=400)
        expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given) or not fresh(timestamp):
            return Response("bad signature", status_code=403)
        data = payload.get("event-data") or {}
        found = events(data if isinstance(data, dict) else {})
        for event in found:
            # Mailgun's token is new for every webhook call: a replay brings the same one.
            event.keys = [
                f"mailgun:token:{token}",
                *([f"mailgun:event:{data['id']}"] if data.get("id") else []),
            ]
        return Notice(found)


def events(data: dict[str, Any]) -> list[Event]:
    event = str(data.get("event", ""))
    message = data.get("message") or {}
    proofs = list(strings(message.get("headers", {})))
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
                smtp_code(status_info.get("code")),
                text.strip(),
                data.get("severity") == "permanent",
                proofs,
            )
        ]
    return []
