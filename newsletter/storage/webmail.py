"""The web app's outgoing mail queue, and the count of unconfirmed confirmations per mailbox.

A signup or lost-link request is one row in ``web_mail_queue``, written in the
request; the web app's background worker claims due rows (under a lease, so several
processes never take one row twice), does the work and mails, and deletes the row,
or puts it back with a later ``next_attempt_at`` when the relay failed. Rows live in
the database, so a restart loses nothing.

``mailbox_confirmations`` counts confirmation mails sent to one canonical mailbox
that nobody confirmed: the web app stops mailing a mailbox at its lifetime cap, and
a confirmation resets the count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa

from newsletter.storage.part import StorePart
from newsletter.storage.schema import mailbox_confirmations, web_mail_queue
from newsletter.storage.suppressions import mailbox_hash


class QueuedMail(NamedTuple):
    """One claimed request: what to do (``action``) for which address."""

    id: int
    action: str  # signup | manage
    email: str
    topics: tuple[str, ...]
    attempts: int


class WebMailStore(StorePart):
    """Queue rows and confirmation counts; each method is one short transaction."""

    def enqueue(self, action: str, email: str, topics: Sequence[str] = ()) -> int:
        now = self.clock()
        with self.engine.begin() as conn:
            result = conn.execute(
                web_mail_queue.insert().values(
                    action=action,
                    email=email,
                    topics=list(topics),
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def claim(self, *, lease: timedelta) -> QueuedMail | None:
        """The oldest due row, held for ``lease``; None when nothing is due."""
        now = self.clock()
        due = sa.and_(
            web_mail_queue.c.next_attempt_at <= now,
            sa.or_(web_mail_queue.c.claimed_until.is_(None), web_mail_queue.c.claimed_until < now),
        )
        with self.engine.begin() as conn:
            for row in conn.execute(
                sa.select(web_mail_queue).where(due).order_by(web_mail_queue.c.id).limit(5)
            ).all():
                # Compare-and-set on the lease: another process that took the row first wins.
                taken = conn.execute(
                    web_mail_queue.update()
                    .where(web_mail_queue.c.id == row.id, due)
                    .values(claimed_until=now + lease)
                )
                if taken.rowcount == 1:
                    return QueuedMail(row.id, row.action, row.email, tuple(row.topics or ()), row.attempts)
        return None

    def done(self, queue_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(web_mail_queue.delete().where(web_mail_queue.c.id == queue_id))

    def retry_at(self, queue_id: int, when: datetime, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                web_mail_queue.update()
                .where(web_mail_queue.c.id == queue_id)
                .values(
                    attempts=web_mail_queue.c.attempts + 1,
                    next_attempt_at=when,
                    claimed_until=None,
                    last_error=error[:500],
                )
            )

    def next_due(self) -> datetime | None:
        """When the earliest row becomes due (the worker sleeps until then, or until woken)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(web_mail_queue.c.next_attempt_at))).scalar()

    def waiting(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(web_mail_queue)).scalar_one())

    def forget(self, email: str) -> None:
        """Drop every queued request for ``email`` (``subscribers remove --forget``)."""
        with self.engine.begin() as conn:
            conn.execute(web_mail_queue.delete().where(web_mail_queue.c.email == email))

    # -- the lifetime cap on unconfirmed confirmations -----------------------------------

    def take_confirmation(self, email: str, *, cap: int) -> bool:
        """Count one more confirmation to ``email``'s mailbox; False (nothing counted) at the cap."""
        key, now = mailbox_hash(email), self.clock()
        with self.engine.begin() as conn:
            grown = conn.execute(
                mailbox_confirmations.update()
                .where(mailbox_confirmations.c.mailbox_hash == key, mailbox_confirmations.c.unconfirmed < cap)
                .values(unconfirmed=mailbox_confirmations.c.unconfirmed + 1, last_sent_at=now)
            )
            if grown.rowcount == 1:
                return True
            if (
                conn.execute(
                    sa.select(mailbox_confirmations.c.unconfirmed).where(
                        mailbox_confirmations.c.mailbox_hash == key
                    )
                ).first()
                is not None
            ):
                return False
            conn.execute(
                mailbox_confirmations.insert().values(mailbox_hash=key, unconfirmed=1, last_sent_at=now)
            )
            return cap >= 1

    def give_back_confirmation(self, email: str) -> None:
        """Undo ``take_confirmation`` for a mail that was not sent."""
        with self.engine.begin() as conn:
            conn.execute(
                mailbox_confirmations.update()
                .where(
                    mailbox_confirmations.c.mailbox_hash == mailbox_hash(email),
                    mailbox_confirmations.c.unconfirmed > 0,
                )
                .values(unconfirmed=mailbox_confirmations.c.unconfirmed - 1)
            )

    def confirmed(self, email: str) -> None:
        """The mailbox's owner confirmed: its count starts again."""
        with self.engine.begin() as conn:
            conn.execute(
                mailbox_confirmations.delete().where(
                    mailbox_confirmations.c.mailbox_hash == mailbox_hash(email)
                )
            )
