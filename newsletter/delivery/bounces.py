"""Bounces that arrive later: RFC 3464 delivery status notifications.

Every digest goes out with a VERP envelope sender, ``bounces+TOKEN@DOMAIN``,
where TOKEN is the signed id of its outbox row. A DSN comes back to that
address; ``process_bounce`` finds the row (by the token, else by the original
Message-ID, else by Final-Recipient), and when the DSN says Action: failed with
a 5.x.x status, suppresses the subscriber. Delayed notices and auto-replies
change nothing. ``BounceReceiver`` is the aiosmtpd server that takes them;
every message it receives is kept in a Maildir for audit.
"""

from __future__ import annotations

import logging
import mailbox
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from newsletter.delivery.suppression import Suppressor, enhanced_status
from newsletter.errors import ConfigError, TokenError
from newsletter.storage.outbox import OutboxStore
from newsletter.storage.subscribers import SubscriberStore
from newsletter.tokens import Purpose, TokenSigner

log = logging.getLogger("newsletter.delivery.bounces")


@dataclass(frozen=True)
class BounceVerdict:
    """What one received message meant."""

    action: str  # suppressed | ignored
    reason: str
    subscriber_id: int | None = None
    status: str = ""


def dsn_recipients(msg: Message) -> list[dict[str, str]]:
    """The per-recipient fields (lower-cased names) of a multipart/report DSN, or [] if it is not one."""
    report_type = msg.get_param("report-type", "")
    if msg.get_content_type() != "multipart/report" or not isinstance(report_type, str) or report_type.lower() != "delivery-status":
        return []
    out: list[dict[str, str]] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload: Any = part.get_payload()
        if isinstance(payload, str):  # some parsers leave it as text: parse the header blocks ourselves
            payload = [message_from_bytes(chunk.encode(), policy=policy.compat32) for chunk in payload.replace("\r\n", "\n").split("\n\n") if chunk.strip()]
        blocks: list[Message] = list(payload)
        # The first block is per-message (Reporting-MTA...), the rest are per-recipient.
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            fields = {k.lower(): str(v).strip() for k, v in block.items()}
            if "action" in fields or "status" in fields:
                out.append(fields)
    return out


def original_message_id(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            payload: Any = part.get_payload()
            inner: Message | None = payload[0] if isinstance(payload, list) and payload else None
            if inner is None:
                text = part.get_payload(decode=True) or b""
                inner = message_from_bytes(text if isinstance(text, bytes) else str(text).encode(), policy=policy.compat32)
            if inner.get("Message-ID"):
                return str(inner["Message-ID"]).strip()
    return ""


class BounceProcessor:
    """Applies DSNs to the store."""

    def __init__(self, outbox: OutboxStore, subscribers: SubscriberStore, signer: TokenSigner, suppressor: Suppressor) -> None:
        self.outbox = outbox
        self.subscribers = subscribers
        self.signer = signer
        self.suppressor = suppressor

    def process(self, raw: bytes, *, envelope_recipients: Iterable[str] = ()) -> BounceVerdict:
        msg = message_from_bytes(raw, policy=policy.compat32)
        auto = (msg.get("Auto-Submitted") or "").lower()
        recipients = dsn_recipients(msg)
        if not recipients:
            why = "auto-reply" if auto.startswith("auto-replied") or msg.get("X-Autoreply") else "not a delivery status notification"
            return BounceVerdict("ignored", why)
        failed = [r for r in recipients if r.get("action", "").lower() == "failed" and enhanced_status(r.get("status", "")).startswith("5")]
        if not failed:
            actions = ", ".join(sorted({r.get("action", "?").lower() for r in recipients}))
            return BounceVerdict("ignored", f"no permanent failure (action: {actions})")
        subscriber_id, delivery_id = self._find(msg, envelope_recipients, failed[0])
        if subscriber_id is None:
            return BounceVerdict("ignored", "permanent failure for an address we do not know", status=failed[0].get("status", ""))
        status = enhanced_status(failed[0].get("status", ""))
        diagnostic = failed[0].get("diagnostic-code", "")
        self.suppressor.record(subscriber_id=subscriber_id, delivery_id=delivery_id, code=None, reply=f"{status} {diagnostic}".strip(), source="dsn", kind="hard")
        log.info("bounce: subscriber %s suppressed (%s)", subscriber_id, status)
        return BounceVerdict("suppressed", f"Action: failed, Status: {status}", subscriber_id, status)

    def _find(self, msg: Message, envelope_recipients: Iterable[str], fields: dict[str, str]) -> tuple[int | None, int | None]:
        for rcpt in envelope_recipients:
            local = rcpt.split("@", 1)[0]
            if local.startswith("bounces+"):
                try:
                    delivery_id = self.signer.read(Purpose.BOUNCE, local.removeprefix("bounces+"))
                except TokenError:
                    continue
                row = self.outbox.get_delivery(delivery_id)
                if row is not None:
                    return row.subscriber_id, row.id
        message_id = original_message_id(msg)
        if message_id:
            row = self.outbox.find_delivery_by_message_id(message_id)
            if row is not None:
                return row.subscriber_id, row.id
        final = fields.get("final-recipient", "") or fields.get("original-recipient", "")
        address = final.split(";", 1)[-1].strip().strip("<>")
        if address:
            subscriber = self.subscribers.find_subscriber(address)
            if subscriber is not None:
                return subscriber.id, None
        return None, None


def process_maildir(processor: BounceProcessor, directory: Path) -> list[tuple[str, BounceVerdict]]:
    """Process every message saved in a Maildir (new/ and cur/); envelope recipients come from Delivered-To / X-Original-To."""
    box = mailbox.Maildir(str(directory), create=False)
    results = []
    for key in sorted(box.keys()):
        raw = box.get_bytes(key)
        msg = message_from_bytes(raw, policy=policy.compat32)
        envelope = [str(v) for v in (msg.get_all("Delivered-To") or []) + (msg.get_all("X-Original-To") or [])]
        results.append((key, processor.process(raw, envelope_recipients=envelope)))
    return results


class _Handler:
    def __init__(self, processor: BounceProcessor, archive: mailbox.Maildir) -> None:
        self.processor = processor
        self.archive = archive

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        # Keep the envelope recipient in the audit copy, so --from-maildir can replay it.
        stamped = b"".join(b"Delivered-To: " + r.encode() + b"\r\n" for r in envelope.rcpt_tos) + raw
        self.archive.add(stamped)
        try:
            verdict = self.processor.process(raw, envelope_recipients=envelope.rcpt_tos)
        except Exception:  # a malformed DSN must not bounce back; it is kept for an operator
            log.exception("could not process a bounce; kept in the Maildir")
            return "250 OK kept for review"
        log.info("bounce from %s to %s: %s (%s)", envelope.mail_from, ",".join(envelope.rcpt_tos), verdict.action, verdict.reason)
        return "250 OK"


class BounceReceiver:
    """An aiosmtpd server for DSNs, loopback by default; use as a context manager."""

    def __init__(self, processor: BounceProcessor, *, maildir: Path, host: str = "127.0.0.1", port: int = 2525) -> None:
        # mailbox.Maildir(create=True) only builds tmp/new/cur for a path that does not
        # exist yet; an existing empty folder (or a fresh default) needs them made here.
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.archive = mailbox.Maildir(str(maildir), create=False)
        self.host = host
        self.port = port or _free_port(host)
        self.controller = Controller(_Handler(processor, self.archive), hostname=host, port=self.port, decode_data=False)

    def __enter__(self) -> BounceReceiver:
        try:
            self.controller.start()
        except (OSError, RuntimeError) as exc:  # aiosmtpd reports a taken port either way
            raise ConfigError(
                f"cannot receive bounces on {self.host}:{self.port}: {' '.join(str(exc).split())}",
                hint="Pick a free port with --port, or stop what is listening there.",
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
