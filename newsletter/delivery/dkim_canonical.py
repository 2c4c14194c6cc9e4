"""DKIM relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4) and a variant's fixed pieces.

``canonical_body``, ``canonical_header``, ``split_message`` and ``select_headers`` are the
general path. ``learn_plans(prepared)`` renders a variant twice with sentinel values for the
reader and returns its ``BodyPlan`` and ``HeaderPlan``: the pieces every message of the variant
shares, canonicalised once. A plan answers None for a message that is not its shape, and the
signer then takes the general path, so a plan can only make signing faster, never different.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.delivery.message import PreparedMessage

# Signed in this order; the fixed ones first. "from" twice: the second names a From header
# that does not exist, so a From added on the way breaks the signature (over-signing).
SIGNED_HEADERS = (
    "from",
    "subject",
    "list-id",
    "mime-version",
    "content-type",
    "list-unsubscribe-post",
    "to",
    "date",
    "message-id",
    "list-unsubscribe",
    "from",
)
_WSP = re.compile(rb"[ \t]+")
SIGNED_NAMES = tuple(name.encode("ascii") for name in SIGNED_HEADERS)
SIGNED_ONCE = tuple(dict.fromkeys(SIGNED_NAMES))
_SENTINEL = "dkimsentinel"


def canonical_fragment(data: bytes) -> bytes:
    """Relaxed body canonicalisation of a piece of a body, without the end-of-body rule."""
    if b" " not in data and b"\t" not in data:
        return data
    collapsed = _WSP.sub(b" ", data)
    return collapsed.replace(b" \r\n", b"\r\n")


def _end_of_body(canonical: bytes) -> bytes:
    """Drop empty lines at the end; a non-empty body ends with one CRLF."""
    end = len(canonical)
    while canonical.endswith(b"\r\n", 0, end):
        end -= 2
    return canonical[:end] + b"\r\n" if end else b""


def canonical_body(body: bytes) -> bytes:
    return _end_of_body(canonical_fragment(body))


def canonical_header(name: bytes, value: bytes) -> bytes:
    """relaxed: lower-case name, unfolded value, WSP runs to one space, trimmed."""
    if b"\r\n" in value:
        value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP.sub(b" ", value)
    return name.strip().lower() + b":" + value.strip(b" \t")


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header fields (name, raw value with folds) in order, and where the body starts."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body_at = message, len(message)
    else:
        head, body_at = message[: end + 2], end + 4
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body_at


_WANTED = frozenset(name.encode("ascii") for name in SIGNED_HEADERS)


def select_headers(
    fields: list[tuple[bytes, bytes]],
    names: Sequence[bytes],
    cache: dict[tuple[bytes, bytes], bytes] | None = None,
) -> list[bytes]:
    """The canonical form of each signed header, bottom-up for repeated names (RFC 6376 5.4.2).

    ``cache`` keeps canonical forms by raw field: a variant's fixed headers are canonicalised once.
    """
    seen: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for field in fields:
        key = field[0].lower()
        if key not in _WANTED:
            key = key.strip()
            if key not in _WANTED:
                continue
        if key in seen:
            seen[key].append(field)
        else:
            seen[key] = [field]
    out = []
    for name in names:
        instances = seen.get(name)
        if instances:
            field = instances.pop()
            canonical = cache.get(field) if cache is not None else None
            if canonical is None:
                canonical = canonical_header(*field) + b"\r\n"
                if cache is not None:
                    if len(cache) > 4096:
                        cache.clear()
                    cache[field] = canonical
            out.append(canonical)
    return out


# -- the variant's fixed pieces ------------------------------------------------------------------


@dataclass(frozen=True)
class BodyPlan:
    """A variant's body as fixed pieces between per-reader values, canonicalised once."""

    pieces: tuple[bytes, ...]
    canonical: tuple[bytes, ...]  # canonical piece i (the last one with the end-of-body rule)
    after_first: Any  # hashlib state after canonical piece 0

    @classmethod
    def learn(cls, body: bytes, sentinels: list[bytes]) -> BodyPlan | None:
        """From a body rendered with ``sentinels`` as the reader's values."""
        parts = re.split(
            b"(" + b"|".join(re.escape(v) for v in sorted(sentinels, key=len, reverse=True)) + b")", body
        )
        pieces = tuple(parts[0::2])
        canonical = [canonical_fragment(p) for p in pieces]
        canonical[-1] = _end_of_body(canonical[-1])
        if not canonical[-1] or len(pieces) < 2:
            return None  # no value, or a body that ends in values: sign it whole
        return cls(pieces, tuple(canonical), hashlib.sha256(canonical[0]))

    def body_hash(self, body: bytes) -> bytes | None:
        """SHA-256 of the canonical body, or None when ``body`` is not this variant's shape."""
        pieces = self.pieces
        first = pieces[0]
        if not body.startswith(first):
            return None
        h = self.after_first.copy()
        pos = len(first)
        last_byte = first[-1:]
        final = len(pieces) - 1
        for i in range(1, final + 1):
            piece = pieces[i]
            if i == final:
                at = len(body) - len(piece)
                if at < pos or not body.endswith(piece):
                    return None
            else:
                at = _find_piece(body, piece, pos)
                if at < 0:
                    return None
            value = body[pos:at]
            if value:
                if not _joins_cleanly(last_byte, value[:1]):
                    return None
                h.update(canonical_fragment(value))
                last_byte = value[-1:]
            if piece and not _joins_cleanly(last_byte, piece[:1]):
                return None
            h.update(self.canonical[i])
            if piece:
                last_byte = piece[-1:]
            pos = at + len(piece)
        return h.digest()


def _find_piece(body: bytes, piece: bytes, start: int) -> int:
    """Where ``piece`` next starts in ``body`` from ``start``, or -1.

    Searches for its first 32 octets and compares the rest in place: ``bytes.find`` would
    preprocess the whole (often 15 KB) piece on every call.
    """
    head = piece[:32]
    at = body.find(head, start)
    while at >= 0 and not body.startswith(piece, at):
        at = body.find(head, at + 1)
    return at


def _joins_cleanly(left: bytes, right: bytes) -> bool:
    """Canonicalising two fragments apart gives what canonicalising them joined gives.

    Only whitespace (or CR) at the end of the left one next to whitespace or a line end at
    the start of the right one is treated differently joined; the splice never makes that.
    """
    return left not in (b" ", b"\t", b"\r") or right not in (b" ", b"\t", b"\r", b"\n")


@dataclass(frozen=True)
class HeaderPlan:
    """The header fields every message of a variant shares (the common tail of its header block),
    canonicalised once; per message only the fields before that tail are parsed."""

    tail: bytes
    names: frozenset[bytes]  # every field name in the tail, signed or not
    canonical: dict[bytes, bytes]  # signed name -> its canonical line

    @classmethod
    def learn(cls, first: bytes, second: bytes) -> HeaderPlan | None:
        """From two header blocks of the variant with different reader values."""
        same, limit = 0, min(len(first), len(second))
        while same < limit and first[-1 - same] == second[-1 - same]:
            same += 1
        start = len(first) - same
        while start < len(first) and (
            first[start - 2 : start] != b"\r\n" or first[start : start + 1] in (b" ", b"\t")
        ):
            start += 1  # to the start of a field, not of a folded line
        tail = first[start:]
        fields, _ = split_message(tail)
        names = [name.strip().lower() for name, _ in fields]
        if not tail or len(set(names)) != len(names):
            return None  # a name twice: bottom-up selection is done the general way
        canonical = {
            key: canonical_header(*field) + b"\r\n"
            for key, field in zip(names, fields, strict=True)
            if key in _WANTED
        }
        return cls(tail, frozenset(names), canonical)

    def signed(self, head: bytes) -> bytes | None:
        """The canonical signed headers in h= order, or None when ``head`` is not this variant's shape."""
        if not head.endswith(self.tail):
            return None
        own: dict[bytes, bytes] = {}
        for name, value in split_message(head[: len(head) - len(self.tail)])[0]:
            key = name.strip().lower()
            if key in self.names or key in own:
                return None
            if key in _WANTED:
                own[key] = canonical_header(name, value) + b"\r\n"
        fixed = self.canonical
        # Each name once: the over-signed second "from" names an instance that is not there.
        return b"".join(fixed.get(name) or own.get(name, b"") for name in SIGNED_ONCE)


def learn_plans(prepared: PreparedMessage) -> tuple[BodyPlan | None, HeaderPlan | None]:
    """A variant's plans, from two renders with different sentinel values for the reader."""
    samples = []
    for n in (1, 2):
        token = f"{_SENTINEL}{n}{secrets.token_hex(8)}"
        values = {
            "to_address": f"{token}r@sentinel.invalid",
            "unsubscribe_url": f"https://sentinel.invalid/{token}u",
            "preferences_url": f"https://sentinel.invalid/{token}p",
        }
        message = prepared.for_recipient(
            to_address=values["to_address"],
            to_name=f"S{n}",
            message_id=f"<{token}@sentinel.invalid>",
            date=f"Thu, 0{n} Jan 2026 00:00:00 +0000",
            unsubscribe_url=values["unsubscribe_url"],
            preferences_url=values["preferences_url"],
        )
        samples.append((message, [v.encode("ascii") for v in values.values()]))
    (first, sentinels), (second, _) = samples
    _, body_at = split_message(first)
    return BodyPlan.learn(first[body_at:], sentinels), HeaderPlan.learn(
        first[: body_at - 2], second[: split_message(second)[1] - 2]
    )
