"""DKIM signing (RFC 6376; ed25519-sha256 per RFC 8463), relaxed/relaxed, cheap per recipient.

Contract:
- ``load_keys(settings)`` reads the configured keys (``mail.dkim_selector``, one selector per
  key, from ``NEWSLETTER_DKIM_PRIVATE_KEY`` or ``mail.dkim_key_file``); a missing or malformed
  key is a ``ConfigError`` with a hint. ``signer_for(settings)`` is None while DKIM is off.
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
whole body, so the fast path can only be faster, never different (tests compare both).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.signing
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from newsletter.config import Settings
from newsletter.errors import ConfigError

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
KEY_TYPES = ("ed25519", "rsa")
RSA_BITS = 2048
ALGORITHMS = {"ed25519": "ed25519-sha256", "rsa": "rsa-sha256"}
_WSP = re.compile(rb"[ \t]+")
_SIGNED = tuple(name.encode("ascii") for name in SIGNED_HEADERS)
_SIGNED_ONCE = tuple(dict.fromkeys(_SIGNED))
_SENTINEL = "dkimsentinel"

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


# -- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    """One private key and the selector it is published under."""

    selector: str
    private: PrivateKey

    @property
    def kind(self) -> str:
        return "ed25519" if isinstance(self.private, ed25519.Ed25519PrivateKey) else "rsa"

    @property
    def algorithm(self) -> str:
        return ALGORITHMS[self.kind]

    def public_b64(self) -> str:
        """The p= value: the raw 32-byte key for ed25519 (RFC 8463), SubjectPublicKeyInfo for rsa."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode("ascii")

    def txt_record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        return f"v=DKIM1; k={self.kind}; p={self.public_b64()}"

    @cached_property
    def _libsodium(self) -> nacl.signing.SigningKey | None:
        # The same deterministic Ed25519 signature as OpenSSL's, about a third faster per message.
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return nacl.signing.SigningKey(self.private.private_bytes_raw())
        return None

    def sign_digest(self, digest: bytes) -> bytes:
        """The signature over a SHA-256 digest: Ed25519 signs the digest itself (RFC 8463 3)."""
        if self._libsodium is not None:
            return self._libsodium.sign(digest).signature
        assert isinstance(self.private, rsa.RSAPrivateKey)
        return self.private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def generate_key(kind: str) -> PrivateKey:
    if kind not in KEY_TYPES:
        raise ConfigError(f"unknown DKIM key type {kind!r}", hint="Use --type ed25519 or --type rsa.")
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def parse_private_keys(pem: bytes, source: str) -> list[PrivateKey]:
    """Every PEM private key in ``pem`` (PKCS#8 or PKCS#1), in order; ConfigError if none or one is bad."""
    pem = pem.replace(b"\\n", b"\n")  # an environment variable written on one line
    blocks = PEM_BLOCK.findall(pem)
    if not blocks:
        raise ConfigError(
            f"{source} holds no PEM private key",
            hint="Create one with 'newsletter dkim keygen --selector S'.",
        )
    keys: list[PrivateKey] = []
    for block in blocks:
        try:
            key = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(
                f"{source} holds a malformed or encrypted private key",
                hint="Create a new one with 'newsletter dkim keygen --selector S'.",
            ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise ConfigError(
                    f"{source} holds a {key.key_size}-bit RSA key; receivers ignore keys under 1024 bits",
                    hint="Use 'newsletter dkim keygen --type rsa' (2048 bits).",
                )
        elif not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(
                f"{source} holds a {type(key).__name__}, not an RSA or Ed25519 key",
                hint="DKIM signs with rsa-sha256 or ed25519-sha256 only.",
            )
        keys.append(key)
    return keys


def dkim_domain(settings: Settings) -> str:
    """d=: mail.dkim_domain, else the From domain."""
    return (settings.mail.dkim_domain or settings.mail.from_address.rsplit("@", 1)[1]).strip().lower()


def selectors(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.mail.dkim_selector.split(",") if s.strip()]


def load_keys(settings: Settings) -> list[DkimKey]:
    """The configured keys, one per selector; [] when mail.dkim_selector is empty."""
    names = selectors(settings)
    if not names:
        return []
    if len(names) > 2:
        raise ConfigError(
            f"mail.dkim_selector names {len(names)} selectors; at most two (one rsa, one ed25519)",
            hint='For example mail.dkim_selector = "news-rsa,news-ed".',
        )
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", name):
            raise ConfigError(
                f"mail.dkim_selector {name!r} is not a DNS label",
                hint="Use letters, digits and hyphens, e.g. news2026.",
            )
    keys: list[PrivateKey] = []
    if settings.mail.dkim_private_key:
        keys = parse_private_keys(
            settings.mail.dkim_private_key.encode("utf-8"), "NEWSLETTER_DKIM_PRIVATE_KEY"
        )
        source = "NEWSLETTER_DKIM_PRIVATE_KEY"
    else:
        files = [f.strip() for f in settings.mail.dkim_key_file.split(",") if f.strip()]
        if not files:
            raise ConfigError(
                f"DKIM selector {', '.join(names)} is set but no private key is given",
                hint="Set mail.dkim_key_file to the file 'newsletter dkim keygen' wrote,"
                " or NEWSLETTER_DKIM_PRIVATE_KEY to its PEM text.",
            )
        for file in files:
            try:
                data = Path(file).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the DKIM key file {file}: {exc.strerror}",
                    hint="Check mail.dkim_key_file,"
                    " or create the key with 'newsletter dkim keygen --selector S'.",
                ) from None
            keys += parse_private_keys(data, f"the DKIM key file {file}")
        source = "mail.dkim_key_file"
    if len(keys) != len(names):
        raise ConfigError(
            f"{source} gives {len(keys)} private key(s) for {len(names)} selector(s) ({', '.join(names)})",
            hint="Give one key per selector in mail.dkim_selector, in the same order.",
        )
    found = [DkimKey(name, key) for name, key in zip(names, keys, strict=True)]
    if len({k.kind for k in found}) != len(found):
        raise ConfigError(
            "two DKIM keys of the same type", hint="Sign with at most one rsa and one ed25519 key."
        )
    return found


# -- canonicalisation (RFC 6376 3.4.2, 3.4.4) -------------------------------------------------


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


def _select(
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
class _BodyPlan:
    """A variant's body as fixed pieces between per-reader values, canonicalised once."""

    pieces: tuple[bytes, ...]
    canonical: tuple[bytes, ...]  # canonical piece i (the last one with the end-of-body rule)
    after_first: Any  # hashlib state after canonical piece 0

    @classmethod
    def learn(cls, body: bytes, sentinels: list[bytes]) -> _BodyPlan | None:
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
class _HeaderPlan:
    """The header fields every message of a variant shares (the common tail of its header block),
    canonicalised once; per message only the fields before that tail are parsed."""

    tail: bytes
    names: frozenset[bytes]  # every field name in the tail, signed or not
    canonical: dict[bytes, bytes]  # signed name -> its canonical line

    @classmethod
    def learn(cls, first: bytes, second: bytes) -> _HeaderPlan | None:
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
        return b"".join(fixed.get(name) or own.get(name, b"") for name in _SIGNED_ONCE)


def _learn(prepared: PreparedMessage) -> tuple[_BodyPlan | None, _HeaderPlan | None]:
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
    return _BodyPlan.learn(first[body_at:], sentinels), _HeaderPlan.learn(
        first[: body_at - 2], second[: split_message(second)[1] - 2]
    )


# -- signing -------------------------------------------------------------------------------------


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
        self._plans: weakref.WeakKeyDictionary[Any, tuple[_BodyPlan | None, _HeaderPlan | None]] = (
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
            signed = b"".join(_select(split_message(head)[0], _SIGNED, self._headers))
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

    def _plan(self, prepared: PreparedMessage) -> tuple[_BodyPlan | None, _HeaderPlan | None]:
        try:
            return self._plans[prepared]
        except KeyError:
            plans = self._plans[prepared] = _learn(prepared)
            return plans


def signer_for(settings: Settings, *, clock: Callable[[], float] = time.time) -> DkimSigner | None:
    """The signer the settings ask for; None while mail.dkim_selector is empty."""
    keys = load_keys(settings)
    return DkimSigner(keys, dkim_domain(settings), clock=clock) if keys else None
