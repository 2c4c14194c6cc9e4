"""`StoredMessage`: one message the sink received, with lazily parsed views of it.

The raw bytes are exactly what the client sent between DATA and the final dot (CRLF kept,
dot-stuffing removed), so checks see bare LF or long lines if a client sent them. Parsing
is lazy: receiving a message costs no parsing at all. The heavy views (bytes, parsed headers
and body, checks) live in a `ParsedCache` bounded by message count, shared by the sink's
messages, and are rebuilt from the file when evicted; only short header strings (subject,
From, To) stay on the message for ever, so listing and searching stay cheap.
"""

from __future__ import annotations

import email
import email.policy
import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from functools import cached_property
from pathlib import Path
from typing import Any

from newsletter.sink.cache import ParsedCache
from newsletter.sink.check_result import Check
from newsletter.sink.checks import run_checks
from newsletter.sink.errors import MessageGoneError

_header_parser = BytesHeaderParser(policy=email.policy.default)


@dataclass(frozen=True, eq=False)
class StoredMessage:
    """A received message. Envelope fields are set at receipt; everything else is derived.

    `path` is where the file is written (Maildir `new/`) -- by the store's writer thread,
    so call `SinkServer.flush()` before reading it directly. A mail client may since have
    moved it to `cur/` with flags appended, which `raw` follows.
    """

    id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    received_at: datetime
    size: int
    path: Path
    cache: ParsedCache = field(default_factory=lambda: ParsedCache(None), repr=False, compare=False)

    @classmethod
    def from_bytes(
        cls,
        raw: bytes,
        *,
        mail_from: str = "",
        rcpt_tos: tuple[str, ...] = (),
        msg_id: str = "offline",
        path: Path | None = None,
    ) -> StoredMessage:
        """A message not received over SMTP (an .eml file, a rendered digest) -- e.g. to
        run the checks on it: `StoredMessage.from_bytes(data).checks`."""
        message = cls(
            id=msg_id,
            mail_from=mail_from,
            rcpt_tos=tuple(rcpt_tos),
            received_at=datetime.now(UTC),
            size=len(raw),
            path=path or Path("new") / msg_id,
        )
        message.cache.put(msg_id, "raw", raw)
        return message

    # -- raw bytes ---------------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        """The message bytes exactly as received (read back from disk when not cached)."""
        return self.cache.get(self.id, "raw", self._read_raw)

    def _read_raw(self) -> bytes:
        for candidate in self._candidate_paths():
            try:
                return candidate.read_bytes()
            except FileNotFoundError:
                continue
        raise MessageGoneError(f"message {self.id} is no longer in the maildir ({self.path})")

    def _candidate_paths(self) -> list[Path]:
        paths = [self.path]
        maildir = self.path.parent.parent
        cur = maildir / "cur"
        if cur.is_dir():
            paths.extend(sorted(cur.glob(self.path.name + ":*")))
            paths.append(cur / self.path.name)
        return paths

    # -- headers -----------------------------------------------------------------------
    @property
    def headers(self) -> Message:
        """The header block only (cheap: the body is not parsed)."""
        return self.cache.get(
            self.id, "headers", lambda: _header_parser.parsebytes(self.raw, headersonly=True)
        )

    def header_items(self) -> list[tuple[str, str]]:
        """All headers in order, values decoded (RFC 2047) as a person would read them."""
        items = []
        for name, value in self.headers.items():
            try:
                items.append((name, str(value)))
            except Exception:  # a malformed header must not hide the others
                items.append((name, repr(value)))
        return items

    @cached_property
    def subject(self) -> str:
        return _header_text(self.headers, "Subject")

    @cached_property
    def from_(self) -> str:
        """The From header as displayed (decoded)."""
        return _header_text(self.headers, "From")

    @cached_property
    def to(self) -> tuple[str, ...]:
        """Addresses (addr-spec) from the To and Cc headers."""
        values: list[str] = []
        for name in ("To", "Cc"):
            values.extend(str(v) for v in self.headers.get_all(name, []))
        return tuple(addr for _, addr in getaddresses(values) if addr)

    @cached_property
    def from_address(self) -> str:
        found = [addr for _, addr in getaddresses([self.from_]) if addr]
        return found[0] if found else ""

    # -- body --------------------------------------------------------------------------
    def as_email(self) -> EmailMessage:
        """A fresh `EmailMessage` (policy=default) parsed from the raw bytes."""
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def _parsed(self) -> EmailMessage:
        return self.cache.get(self.id, "parsed", self.as_email)

    @property
    def text(self) -> str | None:
        """The decoded text/plain body (the one a client would show), or None."""
        return self.cache.get(self.id, "text", lambda: _body(self._parsed, "plain"))

    @property
    def html(self) -> str | None:
        """The decoded text/html body, or None."""
        return self.cache.get(self.id, "html", lambda: _body(self._parsed, "html"))

    @property
    def checks(self) -> list[Check]:
        """Deliverability checks (computed on first access, then cached while in the cache)."""
        return self.cache.get(self.id, "checks", lambda: run_checks(self))

    # -- presentation ------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The fields the message list shows (JSON-ready)."""
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "received_at": self.received_at.isoformat(),
            "size": self.size,
            "subject": self.subject,
            "from": self.from_,
            "to": list(self.to),
        }


def _header_text(headers: Message, name: str) -> str:
    value = headers.get(name)
    if value is None:
        return ""
    try:
        return str(value)
    except Exception:
        return ""


def _body(msg: EmailMessage, subtype: str) -> str | None:
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        return None
    if part is None:
        return None
    if part.get_content_charset() is None:
        # No charset: RFC 2045 says us-ascii, but SMTPUTF8 senders often mean UTF-8.
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                pass
    try:
        content = part.get_content()
    except Exception:
        # Unknown charset or broken transfer encoding: still show something.
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


def address_matches(query: str, addresses: list[str] | tuple[str, ...]) -> bool:
    """Filter semantics shared by `messages()`, `wait_for()` and the API.

    A query with `*` or `?` is an fnmatch pattern; one with `@` must equal an address
    (case-insensitive); anything else is a case-insensitive substring.
    """
    q = query.strip().lower()
    if not q:
        return True
    lowered = [a.lower() for a in addresses]
    if "*" in q or "?" in q:
        return any(fnmatch.fnmatchcase(a, q) for a in lowered)
    if "@" in q:
        return q in lowered
    return any(q in a for a in lowered)


def matches(
    message: StoredMessage,
    *,
    to: str | None = None,
    sender: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    query: str | None = None,
) -> bool:
    """True if `message` passes every given filter (None means "any").

    `to` looks at envelope recipients and To/Cc; `sender` at the envelope sender and From
    (see `address_matches`); `subject` is a case-insensitive substring; `since` keeps
    messages received strictly after it (naive datetimes are taken as UTC); `query` is a
    case-insensitive substring of the subject, From, To/Cc or either envelope address (the
    short strings every message keeps, so a search never parses bodies).
    """
    if since is not None:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if message.received_at <= since:
            return False
    if to and not address_matches(to, message.rcpt_tos + message.to):
        return False
    if sender and not address_matches(sender, (message.mail_from, message.from_address)):
        return False
    if subject and subject.lower() not in message.subject.lower():
        return False
    if query and query.strip():
        needle = query.strip().lower()
        haystack = (message.subject, message.from_, message.mail_from, *message.rcpt_tos, *message.to)
        if not any(needle in value.lower() for value in haystack):
            return False
    return True


__all__ = ["MessageGoneError", "StoredMessage", "address_matches", "matches"]
