"""DKIM signing (RFC 6376; ed25519-sha256 per RFC 8463), relaxed/relaxed, cheap per recipient.

Contract:
- ``signer_for(settings)`` is the signer of the keys ``dkim_keys.load_keys`` reads; None while
  DKIM is off.
- ``DkimSigner.sign(message)`` returns the ``DKIM-Signature`` header lines (one per key) for
  un-stuffed message bytes; prepend them. ``signed(message)`` does both.
- ``DkimSigner.for_recipient(prepared, **values)`` is ``PreparedMessage.for_recipient`` with
  the signature in front; with ``dot_stuffed=True`` the wire form is stuffed after signing
  (the header has no line that starts with "."), so what is signed is what the reader gets.

Cost per recipient: a variant's body is its fixed pieces with the reader's values between
them. The first message of a variant learns those pieces (one render with sentinel values),
canonicalises each once and keeps the SHA-256 state after the first one; each message then
checks its bytes against the pieces (memcmp), canonicalises only the values, hashes what
follows the first value, and signs. Anything unexpected falls back to canonicalising the
whole body (``dkim_canonical``), so the fast path can only be faster, never different (tests
compare both).
"""

from __future__ import annotations

import base64
import hashlib
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from newsletter.config import Settings
from newsletter.delivery.dkim_canonical import (
    SIGNED_HEADERS,
    SIGNED_NAMES,
    BodyPlan,
    HeaderPlan,
    canonical_body,
    learn_plans,
    select_headers,
    split_message,
)
from newsletter.delivery.dkim_keys import DkimKey, dkim_domain, load_keys

if TYPE_CHECKING:
    from newsletter.delivery.message import PreparedMessage


class DkimSigner:
    """Signs messages with one or two keys for one domain; safe to share between threads."""

    def __init__(
        self, keys: Sequence[DkimKey], domain: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self.keys = tuple(keys)
        self.domain = domain
        self.clock = clock
        self._plans: weakref.WeakKeyDictionary[Any, tuple[BodyPlan | None, HeaderPlan | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._headers: dict[tuple[bytes, bytes], bytes] = {}
        # Folded after "content-type:" so that no header line passes 78 octets.
        self._h = ":".join(SIGNED_HEADERS[:5]) + ":\r\n  " + ":".join(SIGNED_HEADERS[5:])
        self._h_canonical = ":".join(SIGNED_HEADERS[:5]) + ": " + ":".join(SIGNED_HEADERS[5:])

    def sign(self, message: bytes, *, variant: PreparedMessage | None = None) -> bytes:
        """The DKIM-Signature header lines for ``message`` (un-stuffed, CRLF), one per key."""
        end = message.find(b"\r\n\r\n")
        head, body = (message[: end + 2], message[end + 4 :]) if end >= 0 else (message, b"")
        body_plan, header_plan = self._plan(variant) if variant is not None else (None, None)
        body_hash = body_plan.body_hash(body) if body_plan is not None else None
        if body_hash is None:
            body_hash = hashlib.sha256(canonical_body(body)).digest()
        signed = header_plan.signed(head) if header_plan is not None else None
        if signed is None:
            signed = b"".join(select_headers(split_message(head)[0], SIGNED_NAMES, self._headers))
        bh = base64.b64encode(body_hash).decode("ascii")
        stamp = int(self.clock())
        out = []
        for key in self.keys:
            value = (
                f" v=1; a={key.algorithm}; c=relaxed/relaxed; d={self.domain};\r\n"
                f" s={key.selector}; t={stamp};\r\n h={self._h};\r\n bh={bh};\r\n b="
            ).encode("ascii")
            # What is signed is this header's own canonical form with b= empty (RFC 6376 3.7),
            # written out here rather than canonicalised from ``value`` (the same bytes, no regex).
            canonical = (
                f"dkim-signature:v=1; a={key.algorithm}; c=relaxed/relaxed; d={self.domain};"
                f" s={key.selector}; t={stamp}; h={self._h_canonical}; bh={bh}; b="
            )
            digest = hashlib.sha256(signed + canonical.encode("ascii")).digest()
            b = base64.b64encode(key.sign_digest(digest))
            out.append(
                b"DKIM-Signature:"
                + value
                + b"\r\n ".join(b[i : i + 72] for i in range(0, len(b), 72))
                + b"\r\n"
            )
        return b"".join(out)

    def signed(self, message: bytes) -> bytes:
        """``message`` with its DKIM-Signature header(s) in front."""
        return self.sign(message) + message

    def for_recipient(self, prepared: PreparedMessage, *, dot_stuffed: bool = False, **values: Any) -> bytes:
        """``prepared.for_recipient(**values)``, signed; stuffed after signing when ``dot_stuffed``."""
        plain = prepared.for_recipient(**values)
        header = self.sign(plain, variant=prepared)
        if dot_stuffed:
            # What message.dot_stuff does, at memcpy speed: "^." in multi-line mode is the start or
            # "." after a LF. The header starts no line with ".", so stuffing it too would change nothing.
            plain = (b"." if plain[:1] == b"." else b"") + plain.replace(b"\n.", b"\n..")
        return header + plain

    def _plan(self, prepared: PreparedMessage) -> tuple[BodyPlan | None, HeaderPlan | None]:
        try:
            return self._plans[prepared]
        except KeyError:
            plans = self._plans[prepared] = learn_plans(prepared)
            return plans


def signer_for(settings: Settings, *, clock: Callable[[], float] = time.time) -> DkimSigner | None:
    """The signer the settings ask for; None while mail.dkim_selector is empty."""
    keys = load_keys(settings)
    return DkimSigner(keys, dkim_domain(settings), clock=clock) if keys else None
