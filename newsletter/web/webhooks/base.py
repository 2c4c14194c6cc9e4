"""What every provider webhook shares: the event a payload is reduced to, and the Protocol a
provider module implements (one module per provider, as flufl.bounce keeps one detector per module)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

MAX_BODY = 256 * 1024
MAX_SKEW = 600  # seconds a signed timestamp may be off (Mailgun, SendGrid)
# How long an event's ids are remembered: past every provider's freshness window (SES: a
# day), so a replay inside it is known; after it, the timestamp check refuses the replay.
EVENT_MEMORY = 2 * 24 * 3600


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
    keys: list[str] = field(
        default_factory=list
    )  # the provider's ids for this event: seen once, it counts once


@dataclass(frozen=True)
class Notice:
    """What one verified request carried: its events."""

    events: list[Event]


class Provider(Protocol):
    """One provider's endpoint: ``POST /webhooks/<name>``.

    ``enabled``: its secret is configured (else the endpoint answers 404).
    ``receive``: checks the provider's own proof and reads the events, or returns the
    answer for a request that is refused (bad signature, not JSON) or carries no events.
    """

    name: str

    def enabled(self) -> bool: ...

    async def receive(self, request: Request) -> Notice | Response: ...


def strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (headers, metadata): where a token or Message-ID may hide."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def smtp_code(text: Any) -> int | None:
    match = re.search(r"\b([245]\d\d)\b", str(text or ""))
    return int(match.group(1)) if match else None


async def read_body(request: Request) -> bytes:
    """The request body, at most ``MAX_BODY`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            break
    return body[:MAX_BODY]


def content_key(provider: str, *parts: object) -> str:
    """An event's key from its content, for events that carry no id of their own."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return f"{provider}:sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def fresh(timestamp: str) -> bool:
    """A signed Unix timestamp within ``MAX_SKEW`` of now."""
    try:
        return abs(time.time() - float(timestamp)) <= MAX_SKEW
    except ValueError:
        return False
