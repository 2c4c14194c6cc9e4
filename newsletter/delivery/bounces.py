"""Reports that arrive later: DSNs (RFC 3464, RFC 6533), non-standard bounces, ARF complaints.

Every digest goes out with a VERP envelope sender, ``bounces+TOKEN@DOMAIN``,
where TOKEN is the signed id of its outbox row. **Only an authenticated report
acts**: one whose envelope recipient carries a token that verifies, or whose
original Message-ID is the outbox row *of the very address it names* -- and that
Message-ID is 128 random bits (``MessageIds``), so no reader can compute another's.
Message-IDs of the shape planned before (``<eN.sM.X@domain>``, X shared by an
edition's rows) are still found, but prove nothing by mail: any reader of that
edition can compute them; their rows' VERP tokens still act. Anything else -- a
forged DSN to postmaster@, a report naming a stranger -- is kept in the audit
Maildir and listed as ``unmatched``; it changes nobody.

What an authenticated report does is decided by ``delivery.judgement`` (the same
table as SMTP replies): a bad address suppresses, a soft failure (mailbox full,
expired in a relay: ``Action: failed`` with 4.x.x) counts toward the soft-bounce
limit, a policy refusal is counted for its domain, a sender problem blames nobody.
``Action: delayed`` and auto-replies change nothing. A DSN is recognised by its
structure first: Postfix marks its DSNs ``Auto-Submitted: auto-replied`` too.
Layouts that are not RFC 3464 (Exchange, qmail, Exim, providers') are read by
flufl.bounce. An ARF feedback report (RFC 5965) is a complaint: it unsubscribes.
"""

from __future__ import annotations

import logging
import mailbox
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flufl.bounce import all_failures

from newsletter.delivery.judgement import Verdict, enhanced_status
from newsletter.delivery.suppression import Suppressor
from newsletter.errors import ConfigError, TokenError
from newsletter.models import Delivery
from newsletter.storage.outbox import OutboxStore
from newsletter.storage.subscribers import SubscriberStore
from newsletter.tokens import Purpose, TokenSigner

log = logging.getLogger("newsletter.delivery.bounces")

STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
REPORT_TYPES = ("delivery-status", "global-delivery-status")
ORIGINAL_PARTS = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
ACTIONS = {
    Verdict.BAD_ADDRESS: "suppressed",
    Verdict.SOFT: "soft",
    Verdict.BLOCKED: "blocked",
    Verdict.SENDER: "sender",
}
VERP_RE = re.compile(r"bounces\+([A-Za-z0-9_.\-]+)@", re.I)
NO_PROOF = "no valid token and no Message-ID of ours for that address"
# Message-IDs planned before they were random: edition, subscriber id and one suffix per edition.
GUESSABLE_ID_RE = re.compile(r"<e\d+\.s\d+\.[0-9a-f]{12}@", re.I)


@dataclass(frozen=True)
class BounceVerdict:
    """What one received message meant.

    ``action``: suppressed (bad address), soft, blocked, sender (our problem, nobody
    blamed), unsubscribed (a complaint), unmatched (a failure report we could not
    authenticate: kept, changes nothing), repeat (about a message already judged: the
    same report again, or another about it; changes nothing) or ignored (not a failure).
    """

    action: str
    reason: str
    subscriber_id: int | None = None
    status: str = ""


# -- reading reports ---------------------------------------------------------------------


def _report_type(msg: Message) -> str:
    value = msg.get_param("report-type", "")
    return value.lower() if msg.get_content_type() == "multipart/report" and isinstance(value, str) else ""


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The header blocks of a message/(global-)delivery-status or feedback-report part, lower-cased names."""
    payload: Any = part.get_payload()
    if isinstance(payload, list):  # the parser split it into blocks (or one message with the rest as body)
        text = "\n".join(m.as_string() if isinstance(m, Message) else str(m) for m in payload)
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    blocks = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text.replace("\r\n", "\n")):
        if chunk.strip():
            block = message_from_string(chunk.strip() + "\n", policy=policy.compat32)
            blocks.append({k.lower(): " ".join(str(v).split()) for k, v in block.items()})
    return blocks


def dsn_recipients(msg: Message) -> list[dict[str, str]]:
    """The per-recipient fields of an RFC 3464 / RFC 6533 report, or [] if it is not one."""
    if _report_type(msg) not in REPORT_TYPES:
        return []
    out: list[dict[str, str]] = []
    for part in msg.walk():
        if part.get_content_type() in STATUS_PARTS:
            out.extend(b for b in _field_blocks(part) if "action" in b or "status" in b)
    return out


def original_headers(msg: Message) -> Message | None:
    """The returned original message (or its headers) inside a report, if any."""
    for part in msg.walk():
        if part.get_content_type() in ORIGINAL_PARTS:
            payload: Any = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            text = part.get_payload(decode=True) or b""
            return message_from_bytes(
                text if isinstance(text, bytes) else str(text).encode(), policy=policy.compat32
            )
    return None


def original_message_id(msg: Message) -> str:
    inner = original_headers(msg)
    return str(inner.get("Message-ID", "")).strip() if inner is not None else ""


def address_of(field: str) -> str:
    """The address in a Final-Recipient / Original-Recipient field ('rfc822; a@b', 'utf-8; ü@b')."""
    address = field.split(";", 1)[-1].strip().strip("<>").strip()
    # RFC 6533 utf-8-addr-xtext: \\x{HEX} escapes.
    return re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m.group(1), 16)), address).lower()


def diagnostic_code(fields: dict[str, str]) -> tuple[int | None, str]:
    """(SMTP code, text) of a Diagnostic-Code field ('smtp; 550 5.1.1 ...')."""
    text = fields.get("diagnostic-code", "").split(";", 1)[-1].strip()
    match = re.match(r"(\d{3})[\s-]", text)
    return (int(match.group(1)) if match else None), text


# -- acting on them ----------------------------------------------------------------------


class BounceProcessor:
    """Applies authenticated reports to the store through the one judgement."""

    def __init__(
        self, outbox: OutboxStore, subscribers: SubscriberStore, signer: TokenSigner, suppressor: Suppressor
    ) -> None:
        self.outbox = outbox
        self.subscribers = subscribers
        self.signer = signer
        self.suppressor = suppressor

    def process(self, raw: bytes, *, envelope_recipients: Iterable[str] = ()) -> BounceVerdict:
        msg = message_from_bytes(raw, policy=policy.compat32)
        envelope = list(envelope_recipients)
        if _report_type(msg) == "feedback-report":
            return self._complaint(msg, envelope)
        recipients = dsn_recipients(msg)
        if recipients:
            return self._dsn(msg, envelope, recipients)
        auto = (msg.get("Auto-Submitted") or "").lower()
        if auto.startswith("auto-replied") or msg.get("X-Autoreply") or msg.get("X-Autorespond"):
            return BounceVerdict("ignored", "auto-reply")
        return self._nonstandard(msg, envelope)

    def _dsn(self, msg: Message, envelope: list[str], recipients: list[dict[str, str]]) -> BounceVerdict:
        failed = [r for r in recipients if r.get("action", "").lower() == "failed"]
        if not failed:
            actions = ", ".join(sorted({r.get("action", "?").lower() for r in recipients}))
            return BounceVerdict("ignored", f"no failure (action: {actions})")
        named = [address_of(r.get("final-recipient", "")) for r in failed] + [
            address_of(r.get("original-recipient", "")) for r in failed
        ]
        row = self.authenticate(msg, envelope, [a for a in named if a])
        fields = failed[0]
        status = enhanced_status(fields.get("status", ""))
        if row is None:
            return BounceVerdict(
                "unmatched",
                f"Action: failed, Status: {status or '?'} for "
                f"{', '.join(a for a in named if a) or 'nobody named'}: {NO_PROOF}",
                status=status,
            )
        # The block about this row's address, when the DSN names it (a forward may name another).
        for r in failed:
            if row.email.lower() in (
                address_of(r.get("final-recipient", "")),
                address_of(r.get("original-recipient", "")),
            ):
                fields, status = r, enhanced_status(r.get("status", ""))
        code, diagnostic = diagnostic_code(fields)
        judgement = self.suppressor.record(
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
            code=code,
            reply=f"{status} {diagnostic}".strip(),
            source="dsn",
            stage="dsn",
            status=status,
        )
        if judgement is None:
            return _repeat(row)
        log.info("bounce: subscriber %s: %s (%s)", row.subscriber_id, judgement.verdict.value, status)
        return BounceVerdict(
            ACTIONS[judgement.verdict], f"Action: failed, Status: {status}", row.subscriber_id, status
        )

    def _nonstandard(self, msg: Message, envelope: list[str]) -> BounceVerdict:
        """A bounce in some MTA's own layout: flufl.bounce finds the addresses."""
        try:
            temporary, permanent = all_failures(msg)
        except Exception:  # a detector choking on a strange message must not lose it: it is kept
            log.exception("flufl.bounce could not read a message")
            return BounceVerdict("ignored", "not a delivery status notification (unreadable)")
        if not permanent:
            return BounceVerdict(
                "ignored", "temporary failure only" if temporary else "not a delivery status notification"
            )
        named = [
            a.decode("utf-8", "replace").lower() if isinstance(a, bytes) else str(a).lower()
            for a in permanent
        ]
        row = self.authenticate(msg, envelope, named)
        if row is None:
            return BounceVerdict(
                "unmatched",
                f"non-standard bounce for {', '.join(named)}: {NO_PROOF}",
            )
        text = _first_text(msg)
        judgement = self.suppressor.record(
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
            code=550,
            reply=text[:500],
            source="dsn",
            stage="dsn",
        )
        if judgement is None:
            return _repeat(row)
        return BounceVerdict(
            ACTIONS[judgement.verdict],
            f"non-standard bounce ({judgement.rule})",
            row.subscriber_id,
            judgement.status,
        )

    def _complaint(self, msg: Message, envelope: list[str]) -> BounceVerdict:
        """An ARF (RFC 5965) report: the reader marked a digest as spam; stop mailing them."""
        named: list[str] = []
        feedback_type = "abuse"
        for part in msg.walk():
            if part.get_content_type() == "message/feedback-report":
                for block in _field_blocks(part):
                    feedback_type = block.get("feedback-type", feedback_type).lower()
                    named += [
                        address_of(block[k])
                        for k in ("original-rcpt-to", "removal-recipient")
                        if block.get(k)
                    ]
        inner = original_headers(msg)
        if inner is not None and inner.get("To"):
            named.append(address_of(str(inner["To"]).rsplit("<", 1)[-1]))
        row = self.authenticate(msg, envelope, named)
        if row is None:
            return BounceVerdict(
                "unmatched",
                f"complaint ({feedback_type}) for {', '.join(named) or 'a redacted address'}: {NO_PROOF}",
            )
        if not self.suppressor.complaint(
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
            reason=f"complaint ({feedback_type}) by feedback loop report",
            source="arf",
        ):
            return _repeat(row)
        return BounceVerdict("unsubscribed", f"complaint ({feedback_type})", row.subscriber_id)

    def authenticate(
        self,
        msg: Message | None,
        envelope: Iterable[str],
        named: Iterable[str],
        *,
        message_id: str = "",
        provider_signed: bool = False,
    ) -> Delivery | None:
        """The outbox row a report proves it is about, or None.

        Proof is a VERP token that verifies (in the envelope recipient, or in the
        Return-Path of the returned original), or the original Message-ID of the
        row whose address the report names. A Message-ID of the old guessable shape
        proves a row only in an event the provider signed (``provider_signed``: a
        webhook; the provider reports what it sent), never in mail anyone can send us.
        """
        candidates = list(envelope)
        inner = original_headers(msg) if msg is not None else None
        if inner is not None:
            candidates += [str(v) for v in inner.get_all("Return-Path") or []]
        for address in candidates:
            row = self.row_for_token(address)
            if row is not None:
                return row
        message_id = message_id or (str(inner.get("Message-ID", "")).strip() if inner is not None else "")
        message_id = message_id if message_id.startswith("<") else f"<{message_id}>"
        if message_id != "<>" and (provider_signed or not GUESSABLE_ID_RE.match(message_id)):
            row = self.outbox.find_delivery_by_message_id(message_id)
            if row is not None and row.email.lower() in {a.lower() for a in named}:
                return row
        return None

    def row_for_token(self, address: str) -> Delivery | None:
        """The outbox row a VERP address (``bounces+TOKEN@domain``) names, if its token verifies."""
        match = VERP_RE.search(address)
        if not match:
            return None
        try:
            delivery_id = self.signer.read(Purpose.BOUNCE, match.group(1))
        except TokenError:
            return None
        return self.outbox.get_delivery(delivery_id)


def _repeat(row: Delivery) -> BounceVerdict:
    return BounceVerdict(
        "repeat", f"outbox row {row.id} was already judged: a report counts once", row.subscriber_id
    )


def _first_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            return " ".join((raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).split())
    return ""


def process_maildir(processor: BounceProcessor, directory: Path) -> list[tuple[str, BounceVerdict]]:
    """Process every message saved in a Maildir (new/ and cur/).

    Envelope recipients come from Delivered-To / X-Original-To; a report already judged
    (by the listener or an earlier run) is a ``repeat`` and changes nothing.
    """
    box = mailbox.Maildir(str(directory), create=False)
    results = []
    for key in sorted(box.keys()):
        raw = box.get_bytes(key)
        msg = message_from_bytes(raw, policy=policy.compat32)
        envelope = [
            str(v) for v in (msg.get_all("Delivered-To") or []) + (msg.get_all("X-Original-To") or [])
        ]
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
        except Exception:  # a malformed report must not bounce back; it is kept for an operator
            log.exception("could not process a bounce; kept in the Maildir")
            return "250 OK kept for review"
        log.info(
            "bounce from %s to %s: %s (%s)",
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            verdict.action,
            verdict.reason,
        )
        return "250 OK"


class BounceReceiver:
    """An aiosmtpd server for DSNs, loopback by default; use as a context manager."""

    def __init__(
        self, processor: BounceProcessor, *, maildir: Path, host: str = "127.0.0.1", port: int = 2525
    ) -> None:
        # mailbox.Maildir(create=True) only builds tmp/new/cur for a path that does not
        # exist yet; an existing empty folder (or a fresh default) needs them made here.
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.archive = mailbox.Maildir(str(maildir), create=False)
        self.host = host
        self.port = port or _free_port(host)
        # SMTPUTF8: Postfix returns global DSNs (RFC 6533) for SMTPUTF8 mail only to a server that offers it.
        self.controller = Controller(
            _Handler(processor, self.archive),
            hostname=host,
            port=self.port,
            decode_data=False,
            enable_SMTPUTF8=True,
        )

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
