"""The suppression list: mailboxes that left, kept after their subscriber row is gone.

An entry is the SHA-256 of the *canonical mailbox* (``canonical_mailbox``: the
address without a plus-tag, and without dots for Gmail), never the address, so
`subscribers remove --forget` can erase every personal detail and still keep the
promise not to mail that inbox again.

Rules (applied by ``SubscriberStore``, so every path honours them: web signup,
`subscribers add`, CSV import and any bulk insert):

- a subscriber becoming unsubscribed or bounced is suppressed, in the same transaction;
- inserting a suppressed mailbox creates the row with the suppressed status, never
  active or pending (``suppressed_status`` is the one lookup insert paths call);
- only ``set_status(..., ACTIVE)`` lifts an entry: the reader's own confirmation or
  an operator's `subscribers reactivate`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.models import SubscriberStatus
from newsletter.storage.part import StorePart
from newsletter.storage.schema import suppressions

# Providers that deliver every dotted spelling of a local part to one inbox.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
SUPPRESSING = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED)


def canonical_mailbox(email: str) -> str:
    """The inbox an address reaches: lower-case, no +tag, and no dots where the provider ignores them.

    ``email`` is an address already normalised by ``subscriptions.normalise_email``.
    """
    local, _, domain = email.strip().lower().rpartition("@")
    if not local:
        return email.strip().lower()
    local = local.split("+", 1)[0] or local  # "+tag@" alone is not a tag
    if domain in DOTLESS_DOMAINS:
        local, domain = local.replace(".", "") or local, DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def mailbox_hash(email: str) -> str:
    """The stored key of a mailbox: hex SHA-256 of its canonical form."""
    return hashlib.sha256(b"newsletter.mailbox:" + canonical_mailbox(email).encode("utf-8")).hexdigest()


def suppressed_status(conn: Connection, email: str) -> SubscriberStatus | None:
    """The status a new row for ``email`` must take (unsubscribed or bounced), or None if not suppressed.

    Every insert into ``subscribers`` calls this inside its own transaction.
    """
    status = conn.execute(
        sa.select(suppressions.c.status).where(suppressions.c.mailbox_hash == mailbox_hash(email))
    ).scalar()
    return SubscriberStatus(status) if status else None


def suppress(conn: Connection, email: str, status: SubscriberStatus, *, reason: str, now: datetime) -> None:
    """Record (or update) the entry for ``email``'s mailbox, inside the caller's transaction."""
    key = mailbox_hash(email)
    values = {"status": status.value, "reason": reason[:300], "created_at": now}
    if (
        conn.execute(
            suppressions.update().where(suppressions.c.mailbox_hash == key).values(**values)
        ).rowcount
        == 0
    ):
        conn.execute(suppressions.insert().values(mailbox_hash=key, **values))


def lift(conn: Connection, email: str) -> None:
    """Remove ``email``'s mailbox from the list (its owner confirmed, or an operator reactivated it)."""
    conn.execute(suppressions.delete().where(suppressions.c.mailbox_hash == mailbox_hash(email)))


class SuppressionStore(StorePart):
    """Read and change the suppression list outside a subscriber transaction (CLI, tests)."""

    def status_of(self, email: str) -> SubscriberStatus | None:
        with self.engine.connect() as conn:
            return suppressed_status(conn, email)

    def suppress(self, email: str, status: SubscriberStatus, *, reason: str) -> None:
        with self.engine.begin() as conn:
            suppress(conn, email, status, reason=reason, now=self.clock())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one())
