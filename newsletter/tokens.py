"""Signed link tokens (itsdangerous), one purpose each.

A token made for one purpose is refused for another because the purpose is the
signing salt. Unsubscribe and preferences tokens never expire (CAN-SPAM asks
30 days, we promise forever); confirmation and management tokens expire.
"""

from __future__ import annotations

import base64
import enum
import hmac
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


EXPIRING = {Purpose.CONFIRM: 7 * 24 * 3600, Purpose.MANAGE: 2 * 24 * 3600}


@dataclass(frozen=True)
class TokenSigner:
    """Makes and checks tokens for one secret key.

    ``confirm_max_age`` overrides how long confirmation tokens live (seconds).
    """

    secret_key: str
    confirm_max_age: int = EXPIRING[Purpose.CONFIRM]

    def __post_init__(self) -> None:
        if not self.secret_key:
            raise TokenError(
                "no secret key is set for signing links",
                hint="Set NEWSLETTER_SECRET_KEY to a long random string (python -c 'import secrets; print(secrets.token_urlsafe(32))').",
            )
        # Serializers are built once: signing a token per recipient must stay cheap.
        object.__setattr__(self, "_plain", {p: URLSafeSerializer(self.secret_key, salt=f"newsletter.{p.value}") for p in Purpose})
        object.__setattr__(self, "_timed", {p: URLSafeTimedSerializer(self.secret_key, salt=f"newsletter.{p.value}") for p in EXPIRING})
        # The fast path below makes byte-identical tokens to URLSafeSerializer.dumps for
        # integer payloads, with the key derivation done once instead of per call
        # (three tokens per recipient at 100k recipients is the hot path of a send).
        macs = {}
        for purpose, serializer in self._plain.items():  # type: ignore[attr-defined]
            signer = serializer.make_signer()
            macs[purpose] = hmac.new(signer.derive_key(), digestmod=signer.digest_method)
        object.__setattr__(self, "_macs", macs)

    def make(self, purpose: Purpose, subscriber_id: int) -> str:
        """A URL-safe token (no '=' or '/') that names one subscriber for one purpose."""
        if purpose in EXPIRING:
            return self._timed[purpose].dumps(subscriber_id)  # type: ignore[attr-defined]
        payload = base64.urlsafe_b64encode(b"%d" % subscriber_id).rstrip(b"=")
        mac = self._macs[purpose].copy()  # type: ignore[attr-defined]
        mac.update(payload)
        return (payload + b"." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")).decode("ascii")

    def issued_at(self, purpose: Purpose, token: str) -> datetime:
        """When an expiring token was made (checked like ``read``)."""
        if purpose not in EXPIRING:
            raise ValueError(f"{purpose.value} tokens carry no time")
        self.read(purpose, token)
        _, stamp = self._timed[purpose].loads(token, return_timestamp=True)  # type: ignore[attr-defined]
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    def read(self, purpose: Purpose, token: str) -> int:
        """The subscriber id in a token; TokenError if tampered, expired or made for another purpose."""
        try:
            if purpose in EXPIRING:
                max_age = self.confirm_max_age if purpose is Purpose.CONFIRM else EXPIRING[purpose]
                value = self._timed[purpose].loads(token, max_age=max_age)  # type: ignore[attr-defined]
            else:
                value = self._plain[purpose].loads(token)  # type: ignore[attr-defined]
        except SignatureExpired as exc:
            raise TokenError(f"this {purpose.value} link has expired") from exc
        except BadSignature as exc:
            raise TokenError(f"this {purpose.value} link is not valid (it was changed, or made for something else)") from exc
        if not isinstance(value, int):
            raise TokenError(f"this {purpose.value} link is not valid")
        return value
