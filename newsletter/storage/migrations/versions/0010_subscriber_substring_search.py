"""subscriber substring search backed by an index: FTS5 trigram (SQLite), pg_trgm GIN (PostgreSQL)

`subscribers list --search` matches any part of an address or a name. A b-tree cannot
seek '%text%', so until now the count and the page scanned every row (0008's narrow
index made the scan cheaper, not shorter). Here:

- SQLite: ``subscribers_search``, an FTS5 table with the trigram tokenizer over
  ``subscribers`` (external content: it holds only the index, no copy of the rows),
  kept in step by triggers on insert, delete and a change of email or name. A phrase
  query of three or more characters finds exactly the rows containing it, ignoring case.
- PostgreSQL: the pg_trgm extension and GIN indexes on lower(email) and lower(name),
  which serve ``lower(column) LIKE '%text%'`` of three or more characters.

Terms of one or two characters have no trigram: they are still answered by a scan.
Where the index cannot be made (an SQLite built without FTS5 or older than 3.34; a
PostgreSQL role that may not create the extension) the revision logs one warning line
and changes nothing: search keeps working by scanning.

A future revision that rebuilds ``subscribers`` on SQLite (batch mode "recreate") drops
these triggers with the old table: it must create them again and rebuild the index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 09:40:00
"""

from __future__ import annotations

import logging
import sqlite3

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

log = logging.getLogger("newsletter.storage.migrations")

SQLITE_UP = (
    "CREATE VIRTUAL TABLE subscribers_search USING fts5(email, name, content='subscribers', content_rowid='id', tokenize='trigram')",
    "INSERT INTO subscribers_search(subscribers_search) VALUES ('rebuild')",
    # External content: the index learns of a change only through these. A status, mark or
    # time update (the common ones) touches neither column and costs the index nothing.
    "CREATE TRIGGER subscribers_search_insert AFTER INSERT ON subscribers BEGIN"
    " INSERT INTO subscribers_search(rowid, email, name) VALUES (new.id, new.email, new.name); END",
    "CREATE TRIGGER subscribers_search_delete AFTER DELETE ON subscribers BEGIN"
    " INSERT INTO subscribers_search(subscribers_search, rowid, email, name) VALUES ('delete', old.id, old.email, old.name); END",
    "CREATE TRIGGER subscribers_search_update AFTER UPDATE OF email, name ON subscribers BEGIN"
    " INSERT INTO subscribers_search(subscribers_search, rowid, email, name) VALUES ('delete', old.id, old.email, old.name);"
    " INSERT INTO subscribers_search(rowid, email, name) VALUES (new.id, new.email, new.name); END",
)
SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS subscribers_search_update",
    "DROP TRIGGER IF EXISTS subscribers_search_delete",
    "DROP TRIGGER IF EXISTS subscribers_search_insert",
    "DROP TABLE IF EXISTS subscribers_search",
)
POSTGRESQL_INDEXES = {"ix_subscribers_email_trgm": "email", "ix_subscribers_name_trgm": "name"}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        missing = _sqlite_lacks_trigram()
        if missing:
            log.warning("subscriber search stays a scan: this SQLite has no FTS5 trigram tokenizer (%s); searches work, more slowly at scale", missing)
            return
        for statement in SQLITE_UP:
            op.execute(statement)
    elif dialect == "postgresql":
        bind = op.get_bind()
        try:
            with bind.begin_nested():  # a refused CREATE EXTENSION must not abort the whole upgrade
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DBAPIError as exc:
            reason = " ".join(str(exc.orig).split())
            log.warning(
                "subscriber search stays a scan: cannot create the pg_trgm extension (%s); to add the index later see README, 'Listing' (CREATE EXTENSION pg_trgm, then two CREATE INDEX)",
                reason,
            )
            return
        # The operator class is named with the extension's own schema: where pg_trgm was installed
        # before, it may live in a schema off this connection's search_path (hosted PostgreSQL keeps
        # extensions in "extensions"), and an unqualified gin_trgm_ops would not be found.
        schema = bind.exec_driver_sql(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        ).scalar_one()
        opclass = bind.dialect.identifier_preparer.quote_identifier(schema) + ".gin_trgm_ops"
        for index, column in POSTGRESQL_INDEXES.items():
            op.execute(f"CREATE INDEX IF NOT EXISTS {index} ON subscribers USING gin (lower({column}) {opclass})")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
    elif dialect == "postgresql":
        for index in POSTGRESQL_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {index}")


def _sqlite_lacks_trigram() -> str:
    """Why this SQLite cannot make the index ('' when it can): probed on a private in-memory database."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='trigram')")
        return ""
    except sqlite3.Error as exc:
        return f"SQLite {sqlite3.sqlite_version}: {exc}"
    finally:
        probe.close()
