"""Signed link tokens, one purpose each, bound to identities that are never reused.

A token made for one purpose is refused for another because the purpose is the
signing salt. Unsubscribe and preferences tokens never expire (CAN-SPAM asks
30 days, we promise forever); confirmation and management tokens expire.

Two formats are read:

- **current** (made by ``make``): ``payload.mac`` with the v2 salt. The payload is
  the subscriber id, and for expiring purposes also the issue time in
  microseconds, so "made before the reader left" is decided exactly. Subscriber
  ids are never reused (AUTOINCREMENT on SQLite, sequences on PostgreSQL), so a
  current token can only ever name the person it was made for.
- **legacy** (mailed before migration 0006): itsdangerous tokens that name only an
  id, which SQLite could give out again. ``read_link`` reports them as legacy; the
  web app honours them only for subscribers that existed at that migration
  (``subscribers.legacy_links``), so an old link never acts on a later signup.

Bounce (VERP) tokens name outbox rows and keep the one itsdangerous format.

Test tokens (``Purpose.TEST``) go in a test send's personal links and envelope in place
of the reader's unsubscribe, preferences and bounce tokens: no other purpose reads them,
so a test link or a bounce of a test changes nothing (``is_test`` tells the pages).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from newsletter.errors import TokenError


class Purpose(str, enum.Enum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    MANAGE = "manage"
    BOUNCE = "bounce"
    TEST = "test"  # a test send's links: they name the reader and change nothing


EXPIRING = {Purpose.CONFIRM: 7 * 24 * 3600, Purpose.MANAGE: 2 * 24 * 3600}
# Purposes whose tokens name a subscriber: these use the current (v2) format.
SUBSCRIBER_PURPOSES = (Purpose.CONFIRM, Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.MANAGE)
MIN_KEY_BYTES = 32
KEY_HINT = (
    "Set NEWSLETTER_SECRET_KEY to a long random string"
    " (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
)


@dataclass(frozen=True)
class Link:
    """What a valid subscriber token says."""

    subscriber_id: int
    legacy: bool  # made before identities were made unique: honour only for subscribers of that time
    issued_at: (
        datetime | None
    )  # expiring purposes only (exact for current tokens, whole seconds for legacy ones)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass(frozen=True)
class TokenSigner:
    """Makes and checks tokens for one secret key (at least 32 bytes).

    ``confirm_max_age`` overrides how long confirmation tokens live (seconds).
    """

    secret_key: str
    confirm_max_age: int = EXPIRING[Purpose.CONFIRM]

    def __post_init__(self) -> None:
        if not self.secret_key:
            raise TokenError("no secret key is set for signing links", hint=KEY_HINT)
        if len(self.secret_key.encode("utf-8")) < MIN_KEY_BYTES:
            raise TokenError(
                f"the secret key is shorter than {MIN_KEY_BYTES} bytes, so links could be forged",
                hint=KEY_HINT,
            )
        # Serializers are built once: signing a token per recipient must stay cheap.
        object.__setattr__(
            self,
            "_plain",
            {p: URLSafeSerializer(self.secret_key, salt=f"newsletter.{p.value}") for p in Purpose},
        )
        object.__setattr__(
            self,
            "_timed",
            {p: URLSafeTimedSerializer(self.secret_key, salt=f"newsletter.{p.value}") for p in EXPIRING},
        )
        # MACs keyed once per purpose, copied per token (three tokens per recipient at
        # 100k recipients is the hot path of a send). Legacy: byte-identical to
        # URLSafeSerializer.dumps for integer payloads (bounce tokens are still made so).
        legacy, current = {}, {}
        for purpose in Purpose:
            signer = URLSafeSerializer(self.secret_key, salt=f"newsletter.{purpose.value}").make_signer()
            legacy[purpose] = hmac.new(signer.derive_key(), digestmod=signer.digest_method)
            v2 = URLSafeSerializer(self.secret_key, salt=f"newsletter.v2.{purpose.value}").make_signer()
            current[purpose] = hmac.new(v2.derive_key(), digestmod=v2.digest_method)
        object.__setattr__(self, "_legacy_macs", legacy)
        object.__setattr__(self, "_macs", current)

    # -- making ----------------------------------------------------------------------

    def make(self, purpose: Purpose, subscriber_id: int, *, issued: datetime | None = None) -> str:
        """A URL-safe token (no '=' or '/') that names one subscriber (or, for BOUNCE, one outbox row).

        ``issued`` backdates an expiring token (tests; default: now).
        """
        if purpose is Purpose.BOUNCE:
            return self._sign(self._legacy_macs, purpose, b"%d" % subscriber_id)  # type: ignore[attr-defined]
        if purpose in EXPIRING:
            micros = int((issued.timestamp() if issued else time.time()) * 1_000_000)
            return self._sign(self._macs, purpose, b"%d:%d" % (subscriber_id, micros))  # type: ignore[attr-defined]
        return self._sign(self._macs, purpose, b"%d" % subscriber_id)  # type: ignore[attr-defined]

    @staticmethod
    def _sign(macs: dict[Purpose, hmac.HMAC], purpose: Purpose, payload: bytes) -> str:
        encoded = _b64(payload)
        mac = macs[purpose].copy()
        mac.update(encoded)
        return (encoded + b"." + _b64(mac.digest())).decode("ascii")

    # -- reading ---------------------------------------------------------------------

    def is_test(self, token: str) -> bool:
        """Whether ``token`` is a valid test token (made by ``make(Purpose.TEST, ...)``)."""
        return self._read_current(Purpose.TEST, token) is not None

    def read(self, purpose: Purpose, token: str) -> int:
        """The id in a token of either format; TokenError if tampered, expired or made for another purpose."""
        return self.read_link(purpose, token).subscriber_id

    def issued_at(self, purpose: Purpose, token: str) -> datetime:
        """When an expiring token was made (checked like ``read``)."""
        if purpose not in EXPIRING:
            raise ValueError(f"{purpose.value} tokens carry no time")
        issued = self.read_link(purpose, token).issued_at
        assert issued is not None
        return issued

    def read_link(self, purpose: Purpose, token: str) -> Link:
        """The checked contents of a token; TokenError if tampered, expired or made for another purpose."""
        if purpose is not Purpose.BOUNCE:
            current = self._read_current(purpose, token)
            if current is not None:
                return current
        return self._read_legacy(purpose, token)

    def _read_current(self, purpose: Purpose, token: str) -> Link | None:
        """A current-format token's contents, None if the token is not one (it may be legacy)."""
        payload, dot, signature = token.partition(".")
        if not dot or "." in signature or not payload or len(token) > 200:
            return None
        mac = self._macs[purpose].copy()  # type: ignore[attr-defined]
        mac.update(payload.encode("ascii", "replace"))
        try:
            if not hmac.compare_digest(mac.digest(), _unb64(signature)):
                return None
            fields = _unb64(payload).decode("ascii").split(":")
        except (binascii.Error, ValueError, UnicodeError):
            return None
        if purpose not in EXPIRING:
            return (
                Link(int(fields[0]), legacy=False, issued_at=None)
                if len(fields) == 1 and fields[0].isdigit()
                else None
            )
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            return None
        micros = int(fields[1])
        if time.time() * 1_000_000 - micros > self._max_age(purpose) * 1_000_000:
            raise TokenError(f"this {purpose.value} link has expired")
        return Link(int(fields[0]), legacy=False, issued_at=datetime.fromtimestamp(micros / 1_000_000, UTC))

    def _read_legacy(self, purpose: Purpose, token: str) -> Link:
        issued: datetime | None = None
        try:
            if purpose in EXPIRING:
                value, stamp = self._timed[purpose].loads(  # type: ignore[attr-defined]
                    token, max_age=self._max_age(purpose), return_timestamp=True
                )
                issued = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            else:
                value = self._plain[purpose].loads(token)  # type: ignore[attr-defined]
        except SignatureExpired as exc:
            raise TokenError(f"this {purpose.value} link has expired") from exc
        except BadSignature as exc:
            raise TokenError(
                f"this {purpose.value} link is not valid (it was changed, or made for something else)"
            ) from exc
        if not isinstance(value, int) or isinstance(value, bool):
            raise TokenError(f"this {purpose.value} link is not valid")
        return Link(value, legacy=purpose is not Purpose.BOUNCE, issued_at=issued)

    def _max_age(self, purpose: Purpose) -> int:
        return self.confirm_max_age if purpose is Purpose.CONFIRM else EXPIRING[purpose]
