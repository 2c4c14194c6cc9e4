"""The operator console's accounts: users, server-side sessions, API tokens and the audit log.

Secrets never reach this module in the clear: it stores argon2 password hashes
made by the caller, and SHA-256 digests of session cookies and API tokens (both
are long random values, so a plain digest is enough to make a stolen database
useless for logging in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.storage.part import StorePart
from newsletter.storage.schema import admin_sessions, admin_users, api_tokens, audit_log


@dataclass(frozen=True)
class Operator:
    id: int
    email: str
    role: str
    password_hash: str
    created_at: datetime
    last_login_at: datetime | None
    failed_logins: int
    locked_until: datetime | None


@dataclass(frozen=True)
class Session:
    id_hash: str
    user_id: int
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str
    client: str


class AccountStore(StorePart):
    """Queries of the console's tables. Each method is one transaction."""

    # -- users ------------------------------------------------------------------------

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(admin_users)).scalar_one())

    def create_user(self, *, email: str, role: str, password_hash: str) -> Operator | None:
        """The new user, or None when the address already has an account."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    admin_users.insert().values(
                        email=email,
                        role=role,
                        password_hash=password_hash,
                        created_at=self.clock(),
                        failed_logins=0,
                    )
                )
        except IntegrityError:
            return None
        return self.find_user(email)

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_users.update()
                .where(admin_users.c.id == user_id)
                .values(password_hash=password_hash, failed_logins=0, locked_until=None)
            )
            conn.execute(admin_sessions.delete().where(admin_sessions.c.user_id == user_id))

    def set_role(self, user_id: int, role: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_users.update().where(admin_users.c.id == user_id).values(role=role))

    def find_user(self, email: str) -> Operator | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admin_users).where(admin_users.c.email == email)).first()
        return _operator(row) if row else None

    def get_user(self, user_id: int) -> Operator | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admin_users).where(admin_users.c.id == user_id)).first()
        return _operator(row) if row else None

    def list_users(self) -> list[Operator]:
        with self.engine.connect() as conn:
            return [_operator(r) for r in conn.execute(sa.select(admin_users).order_by(admin_users.c.email))]

    def record_failed_login(self, user_id: int, *, lock_after: int, lock_for: timedelta) -> Operator:
        """Count a failed login; the ``lock_after``-th in a row locks the account for ``lock_for``."""
        now = self.clock()
        with self.engine.begin() as conn:
            failed = admin_users.c.failed_logins + 1
            conn.execute(admin_users.update().where(admin_users.c.id == user_id).values(failed_logins=failed))
            count = conn.execute(
                sa.select(admin_users.c.failed_logins).where(admin_users.c.id == user_id)
            ).scalar_one()
            if count >= lock_after:
                conn.execute(
                    admin_users.update()
                    .where(admin_users.c.id == user_id)
                    .values(locked_until=now + lock_for, failed_logins=0)
                )
        user = self.get_user(user_id)
        assert user is not None
        return user

    def record_login(self, user_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_users.update()
                .where(admin_users.c.id == user_id)
                .values(failed_logins=0, locked_until=None, last_login_at=self.clock())
            )

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, *, id_hash: str, user_id: int, csrf_token: str, client: str) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                admin_sessions.insert().values(
                    id_hash=id_hash,
                    user_id=user_id,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    client=client[:100],
                )
            )

    def get_session(self, id_hash: str) -> Session | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admin_sessions).where(admin_sessions.c.id_hash == id_hash)).first()
        if row is None:
            return None
        return Session(row.id_hash, row.user_id, row.csrf_token, row.created_at, row.last_seen_at)

    def touch_session(self, id_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_sessions.update()
                .where(admin_sessions.c.id_hash == id_hash)
                .values(last_seen_at=self.clock())
            )

    def delete_session(self, id_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.id_hash == id_hash))

    def delete_idle_sessions(self, *, idle: timedelta) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    admin_sessions.delete().where(admin_sessions.c.last_seen_at < self.clock() - idle)
                ).rowcount
                or 0
            )

    # -- API tokens -------------------------------------------------------------------------

    def create_token(self, *, user_id: int, name: str, token_hash: str, prefix: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                api_tokens.insert().values(
                    user_id=user_id,
                    name=name[:100],
                    token_hash=token_hash,
                    prefix=prefix,
                    created_at=self.clock(),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def token_owner(self, token_hash: str) -> tuple[ApiToken, Operator] | None:
        """The live (not revoked) token with this digest and its user; marks it used."""
        query = sa.select(api_tokens, admin_users).join(admin_users, admin_users.c.id == api_tokens.c.user_id)
        with self.engine.begin() as conn:
            row = conn.execute(
                query.where(api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None))
            ).first()
            if row is None:
                return None
            conn.execute(
                api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=self.clock())
            )
        user = self.get_user(row.user_id)
        assert user is not None
        return _token(row), user

    def list_tokens(self, user_id: int | None = None) -> list[ApiToken]:
        query = sa.select(api_tokens).order_by(api_tokens.c.id.desc())
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [_token(r) for r in conn.execute(query)]

    def get_token(self, token_id: int) -> ApiToken | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
        return _token(row) if row else None

    def revoke_token(self, token_id: int) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
            return bool(result.rowcount)

    # -- audit log ---------------------------------------------------------------------------

    def audit(self, *, actor: str, action: str, target: str = "", detail: str = "", client: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                audit_log.insert().values(
                    at=self.clock(),
                    actor=actor[:320],
                    action=action[:60],
                    target=target[:500],
                    detail=detail[:1000],
                    client=client[:100],
                )
            )

    def replace_audit_target(self, target: str, replacement: str) -> int:
        """Name ``replacement`` instead of ``target`` in every entry (a reader erased on request);
        how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                audit_log.update().where(audit_log.c.target == target).values(target=replacement[:500])
            )
            return int(result.rowcount)

    def audit_entries(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        target: str | None = None,
        actions: Sequence[str] | None = None,
    ) -> list[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if actions:
            query = query.where(audit_log.c.action.in_(list(actions)))
        with self.engine.connect() as conn:
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.detail, r.client)
                for r in conn.execute(query)
            ]


def _operator(row: Any) -> Operator:
    return Operator(
        row.id,
        row.email,
        row.role,
        row.password_hash,
        row.created_at,
        row.last_login_at,
        row.failed_logins,
        row.locked_until,
    )


def _token(row: Any) -> ApiToken:
    return ApiToken(
        row.id, row.user_id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at
    )
