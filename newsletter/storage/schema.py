"""Every table of the service, in one place (SQLAlchemy Core).

The migrations in ``newsletter.storage.migrations`` create and change these
tables; nothing creates a table at run time. Times are stored in UTC and always
come back timezone-aware (``UTCDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime that stores UTC and returns aware datetimes on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware one")
        value = value.astimezone(UTC)
        # SQLite keeps no offset; store naive UTC so string comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("topics", sa.JSON, nullable=False, default=list),
    sa.Column("cadence", sa.String(10), nullable=False, default="daily"),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_digest_at", UTCDateTime),
    sa.Column("confirmation_sent_at", UTCDateTime),  # the last confirmation or manage mail (rate limit)
    sa.Column("status_reason", sa.String(300), nullable=False, default=""),
    # The reader's ledger mark: every report whose seq is at or below it was either placed in a
    # digest this reader was sent or judged not for them. Moves only when a row is sent (or its
    # outcome is unknown), and is set to the newest report when the reader becomes active.
    # NULL: never planned (a bulk import): the first digest takes the newest reports.
    sa.Column("ledger_seq", sa.Integer),
    # True for readers who existed before identities were made unique (migration 0006): only
    # their legacy (id-only) links are honoured; every later reader's links are current tokens.
    sa.Column("legacy_links", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    # `subscribers list --search` scans this narrow covering index, not the wide table (migration 0008).
    sa.Index("ix_subscribers_search", "email", "name", "status"),
    # A send asks twice a second who left since it began: read by this index, not the table (0011).
    sa.Index("ix_subscribers_updated_at", "updated_at"),
    # Ids are never given out again, even after the highest one is deleted: a removed reader's
    # links must never name the next signup.
    sqlite_autoincrement=True,
)
# Search by part of an address or name (migration 0010). PostgreSQL: these pg_trgm GIN indexes serve
# lower(column) LIKE '%text%'. SQLite: the FTS5 trigram table subscribers_search and its triggers,
# made by the migration alone (SQLAlchemy has no virtual tables); a rebuild of this table must redo them.
for _searched in ("email", "name"):
    sa.Index(
        f"ix_subscribers_{_searched}_trgm",
        sa.func.lower(subscribers.c[_searched]).label(f"lower_{_searched}"),
        postgresql_using="gin",
        postgresql_ops={f"lower_{_searched}": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql")

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(500), primary_key=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("published", UTCDateTime, nullable=False, index=True),
    sa.Column("teaser", sa.Text, nullable=False),
    sa.Column("topics", sa.JSON, nullable=False),
    sa.Column("members_only", sa.Boolean, nullable=False, default=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The ingest sequence: 1, 2, 3... in the order the service first stored the reports. "New for
    # you" is decided on it, never on the publisher's date, so late and backdated reports still count.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.UniqueConstraint("seq", name="uq_reports_seq"),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(200), nullable=False, unique=True),
    sa.Column("schedule", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("as_of", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("reason", sa.String(1000), nullable=False, default=""),
)

variants = sa.Table(
    "variants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id"), nullable=False, index=True),
    sa.Column("report_ids", sa.JSON, nullable=False),
    sa.Column("subject", sa.String(500), nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id"), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("variant_id", sa.Integer, sa.ForeignKey("variants.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("message_id", sa.String(300), nullable=False, unique=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("last_code", sa.Integer),
    sa.Column("last_reply", sa.String(1000), nullable=False, default=""),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("claimed_by", sa.String(200)),  # "host:pid" of the sender holding the row
    sa.Column("lease_until", UTCDateTime),  # a 'sending' row whose lease ran out is claimable again
    # The fencing token of the sender holding a 'sending' row: results, renewals and give-backs
    # are written only while the row still carries it (a sender that lost the row writes nothing).
    sa.Column("claim_token", sa.String(32)),
    sa.Column("ledger_seq", sa.Integer),  # the reader's ledger mark once this row is sent
    sa.Column(
        "carried", sa.Integer, nullable=False, default=0
    ),  # reports over digest.max_reports left for the next digest
    sa.UniqueConstraint("edition_id", "subscriber_id", name="uq_delivery_edition_subscriber"),
    sa.Index("ix_deliveries_edition_state_id", "edition_id", "state", "id"),
    # Planning skips readers with an unfinished row in another edition: looked up per reader.
    sa.Index("ix_deliveries_subscriber_state", "subscriber_id", "state"),
    # A bounce names its row by id (VERP): a removed reader's deleted row id is never given out again.
    sqlite_autoincrement=True,
)

bounce_events = sa.Table(
    "bounce_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("delivery_id", sa.Integer),
    sa.Column("kind", sa.String(10), nullable=False),  # hard | soft
    sa.Column("code", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False, default=""),  # enhanced status, e.g. 5.1.1
    sa.Column("reply", sa.String(1000), nullable=False, default=""),
    sa.Column("source", sa.String(20), nullable=False),  # smtp | dsn
    sa.Column("at", UTCDateTime, nullable=False),
)

# Judgements already counted, so a report or event counts once however often it arrives
# (newsletter.storage.bounces): "row:<delivery id>:failure|complaint" (kept with the outbox),
# "<provider>:<event id>" (kept until expires_at, past the provider's freshness window).
judged_reports = sa.Table(
    "judged_reports",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, index=True),  # NULL: kept
)

send_locks = sa.Table(
    "send_locks",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

feed_state = sa.Table(
    "feed_state",
    metadata,
    sa.Column("source", sa.String(2000), primary_key=True),
    sa.Column("etag", sa.String(500)),
    sa.Column("modified", sa.String(100)),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
)

# -- the operator console (newsletter.admin): accounts, sessions, API tokens, audit log ----------

admin_users = sa.Table(
    "admin_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("role", sa.String(10), nullable=False),  # viewer | editor | admin
    sa.Column("password_hash", sa.String(200), nullable=False),  # argon2id, never the password
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),  # in a row; reset by a good login
    sa.Column("locked_until", UTCDateTime),
)

admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column(
        "id_hash", sa.String(64), primary_key=True
    ),  # SHA-256 of the cookie value; the value is never stored
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("client", sa.String(100), nullable=False, default=""),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # SHA-256; the token is shown once
    sa.Column("prefix", sa.String(16), nullable=False),  # the first characters, to tell tokens apart
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(320), nullable=False),  # the operator's address, or "cli"
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("target", sa.String(500), nullable=False, default=""),
    sa.Column("detail", sa.String(1000), nullable=False, default=""),
    sa.Column("client", sa.String(100), nullable=False, default=""),  # where from: the client address
)


# -- suppression list and the web app's mail queue (migration 0006) -------------------------

suppressions = sa.Table(
    "suppressions",
    metadata,
    # SHA-256 of the canonical mailbox (storage/suppressions.py), never the address itself.
    sa.Column("mailbox_hash", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),  # unsubscribed | bounced: what a new row becomes
    sa.Column("reason", sa.String(300), nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

web_mail_queue = sa.Table(
    "web_mail_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("action", sa.String(20), nullable=False),  # signup | manage
    sa.Column("email", sa.String(320), nullable=False, index=True),
    sa.Column("topics", sa.JSON, nullable=False, default=list),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False, index=True),
    sa.Column("claimed_until", UTCDateTime),  # a worker holds the row until then
    sa.Column("last_error", sa.String(500), nullable=False, default=""),
    sqlite_autoincrement=True,
)

mailbox_confirmations = sa.Table(
    "mailbox_confirmations",
    metadata,
    # Confirmation mails sent to one canonical mailbox that nobody confirmed (a lifetime cap).
    sa.Column("mailbox_hash", sa.String(64), primary_key=True),
    sa.Column("unconfirmed", sa.Integer, nullable=False, default=0),
    sa.Column("last_sent_at", UTCDateTime, nullable=False),
)
