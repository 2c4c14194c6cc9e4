"""Versioned schema changes (Alembic), applied by `newsletter db upgrade`.

``ensure_schema`` runs at start: an empty database is brought to the newest
revision (a fresh install needs no extra step); a database at an older revision
is refused with a message naming the command that upgrades it.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from newsletter.errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply every migration up to ``revision``; returns (before, after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), revision)
    return before, current_revision(engine) or ""


def ensure_schema(engine: Engine) -> None:
    """Create a fresh database's tables; refuse a database whose schema is behind the code."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        existing = set(sa.inspect(engine).get_table_names())
        if "subscribers" not in existing:
            upgrade(engine)
            return
        raise StoreError(
            "the database has the service's tables but no schema version",
            hint="It was made without migrations: export its subscribers with the build that made it"
            " ('newsletter subscribers export'), then import them into a new database"
            " ('newsletter subscribers import').",
        )
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise StoreError(
            f"the database is at schema revision {current}, which this version of the service does not know",
            hint="It was upgraded by a newer release: run that release, or restore a backup.",
        )
    raise StoreError(
        f"the database schema is behind (revision {current}, this release needs {head})",
        hint="Run 'newsletter db upgrade' (back up the database first).",
    )
