"""Operators, their passwords, sessions and API tokens: the console's security rules in one place.

- Passwords are hashed with argon2id (argon2-cffi); a wrong address costs the same
  hash as a wrong password, so timing tells nothing.
- ``LOCK_AFTER`` wrong passwords in a row lock the account for ``LOCK_FOR``; a good
  login resets the count. (Per-client rate limits live in the app.)
- A session is a random cookie value; only its SHA-256 is stored, with the
  session's CSRF token. A new one is made at every login (rotation) and it ends after
  ``idle`` without a request.
- API tokens are ``nlk_`` plus 43 random characters, shown once, stored as SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from newsletter.errors import InvalidAddress, NewsletterError
from newsletter.storage.accounts import AccountStore, ApiToken, Operator, Session
from newsletter.subscriptions import normalise_email

ROLES = ("viewer", "editor", "admin")  # each can do what the ones before it can
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes any length; a bound keeps a login post from being a CPU bomb
LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
TOKEN_PREFIX = "nlk_"
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the address is unknown; made at the first such sign-in,
    not at import (hashing costs 0.2 s of CPU and 64 MB, and every CLI command imports this)."""
    return _hasher.hash("no such operator: compare against something")


class AccountError(NewsletterError):
    """An account cannot be made or used as asked."""


class LoginRefused(NewsletterError):
    """Wrong address or password, or a locked account. The message never says which address exists."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            f"the password must have at least {MIN_PASSWORD} characters",
            hint="Use a passphrase of several words.",
        )
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must have at most {MAX_PASSWORD} characters")


@dataclass(frozen=True)
class SignedIn:
    """A live console session: who, and the CSRF token its forms carry."""

    operator: Operator
    session: Session


class Accounts:
    """The rules above over one AccountStore."""

    def __init__(self, store: AccountStore, *, idle: timedelta) -> None:
        self.store = store
        self.idle = idle

    # -- users -------------------------------------------------------------------------

    def create_user(self, email: str, *, role: str, password: str) -> Operator:
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r}", hint=f"Use one of {', '.join(ROLES)}.")
        try:
            address = normalise_email(email)
        except InvalidAddress as exc:
            raise AccountError(exc.message, hint=exc.hint) from exc
        check_password_rules(password)
        user = self.store.create_user(email=address, role=role, password_hash=_hasher.hash(password))
        if user is None:
            raise AccountError(
                f"{address} already has an account",
                hint="'newsletter admin set-password EMAIL' changes its password.",
            )
        return user

    def set_password(self, email: str, password: str) -> Operator:
        user = self.store.find_user(email.strip().lower())
        if user is None:
            raise AccountError(f"{email} has no account", hint="'newsletter admin users' lists them.")
        check_password_rules(password)
        self.store.set_password(user.id, _hasher.hash(password))  # also ends the user's sessions
        return user

    def set_role(self, user_id: int, role: str) -> Operator:
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r}", hint=f"Use one of {', '.join(ROLES)}.")
        user = self.store.get_user(user_id)
        if user is None:
            raise AccountError(f"no user #{user_id}")
        if (
            user.role == "admin"
            and role != "admin"
            and sum(1 for u in self.store.list_users() if u.role == "admin") == 1
        ):
            raise AccountError("that is the last admin", hint="Make another user admin first.")
        self.store.set_role(user_id, role)
        return user

    # -- login and sessions ---------------------------------------------------------------

    def authenticate(self, email: str, password: str) -> Operator:
        """The operator these credentials name; LoginRefused otherwise (and the failure is counted)."""
        user = self.store.find_user(email.strip().lower()) if len(password) <= MAX_PASSWORD else None
        now = self.store.clock()
        if user is None:
            _verify(_dummy_hash(), password[:MAX_PASSWORD])  # same cost as a real check
            raise LoginRefused("wrong address or password")
        if user.locked_until is not None and user.locked_until > now:
            raise LoginRefused(
                "this account is locked after too many wrong passwords",
                hint=f"Try again after {user.locked_until:%H:%M} UTC.",
            )
        if not _verify(user.password_hash, password):
            after = self.store.record_failed_login(user.id, lock_after=LOCK_AFTER, lock_for=LOCK_FOR)
            if after.locked_until is not None and after.locked_until > now:
                raise LoginRefused(
                    "this account is locked after too many wrong passwords",
                    hint=f"Try again after {after.locked_until:%H:%M} UTC.",
                )
            raise LoginRefused("wrong address or password")
        if _hasher.check_needs_rehash(user.password_hash):
            self.store.set_password(user.id, _hasher.hash(password))
        self.store.record_login(user.id)
        return user

    def start_session(
        self, user: Operator, *, client: str, previous: str | None = None
    ) -> tuple[str, SignedIn]:
        """A fresh session (the cookie value, and the session); ``previous`` (the old cookie) is ended."""
        if previous:
            self.store.delete_session(digest(previous))
        self.store.delete_idle_sessions(idle=self.idle)  # sweep sessions that ended by idling
        cookie = secrets.token_urlsafe(32)
        self.store.create_session(
            id_hash=digest(cookie), user_id=user.id, csrf_token=secrets.token_urlsafe(32), client=client
        )
        session = self.store.get_session(digest(cookie))
        assert session is not None
        return cookie, SignedIn(user, session)

    def session_for(self, cookie: str | None) -> SignedIn | None:
        """The live session of this cookie value, its idle time restarted;
        None if unknown or idle too long."""
        if not cookie:
            return None
        id_hash = digest(cookie)
        session = self.store.get_session(id_hash)
        if session is None:
            return None
        if self.store.clock() - session.last_seen_at > self.idle:
            self.store.delete_session(id_hash)
            return None
        user = self.store.get_user(session.user_id)
        if user is None:
            return None
        self.store.touch_session(id_hash)
        return SignedIn(user, session)

    def end_session(self, cookie: str | None) -> None:
        if cookie:
            self.store.delete_session(digest(cookie))

    # -- API tokens ---------------------------------------------------------------------------

    def issue_token(self, user: Operator, name: str) -> tuple[str, int]:
        """A new token for ``user`` (the only time it is seen in the clear) and its id."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = self.store.create_token(
            user_id=user.id, name=name.strip() or "token", token_hash=digest(token), prefix=token[:10]
        )
        return token, token_id

    def token_user(self, token: str) -> tuple[ApiToken, Operator] | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        return self.store.token_owner(digest(token))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
