"""Schema migrations on PostgreSQL: `newsletter db upgrade` on an empty database, `db current`,
the migrations matching the tables the code declares, and the start-up check."""

from __future__ import annotations

import logging
import secrets
import subprocess

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from newsletter.errors import StoreError
from newsletter.storage.migrations import current_revision, head_revision
from newsletter.storage.schema import metadata
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber
from tests.factories import pg_server_url

from .helpers import NEWSLETTER, subprocess_env


def cli(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEWSLETTER, *args], env=subprocess_env(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_db_upgrade_on_an_empty_database_then_current(pg_env, pg_url, tmp_path):
    head = head_revision()
    before = cli(["db", "current"], pg_env, tmp_path)
    assert before.returncode == 0, before.stderr
    assert (
        "database: empty" in before.stdout
        and f"this release: {head}" in before.stdout
        and "newsletter db upgrade" in before.stdout
    )

    upgraded = cli(["db", "upgrade"], pg_env, tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"empty -> {head}" in upgraded.stdout

    engine = sa.create_engine(pg_url)
    try:
        assert current_revision(engine) == head
        tables = set(sa.inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
    finally:
        engine.dispose()

    now = cli(["db", "current"], pg_env, tmp_path)
    assert now.returncode == 0, now.stderr
    assert f"database: {head}; this release: {head}" in now.stdout and "upgrade" not in now.stdout
    again = cli(["db", "upgrade"], pg_env, tmp_path)
    assert again.returncode == 0 and f"is current ({head})" in again.stdout


def test_migrations_create_exactly_the_declared_schema(pg_url):
    """Autogenerate finds nothing to change: the migration scripts and store.metadata agree on PostgreSQL."""
    store = Store(pg_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == []
    finally:
        store.dispose()


def test_start_up_refuses_a_schema_it_does_not_know(pg_url):
    Store(pg_url).dispose()
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # a database a newer release migrated: no public method writes one
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    engine.dispose()
    with pytest.raises(StoreError) as caught:
        Store(pg_url)
    assert "ffff_from_the_future" in caught.value.message and caught.value.hint


def test_start_up_refuses_tables_without_a_version(pg_url):
    Store(pg_url).dispose()
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # tables made by hand, without a version: no public method does that
        conn.execute(sa.text("DROP TABLE alembic_version"))
    engine.dispose()
    with pytest.raises(StoreError) as caught:
        Store(pg_url)
    assert "no schema version" in caught.value.message


def test_a_role_that_may_not_create_pg_trgm_gets_one_warning_and_a_working_search(pg_admin, caplog):
    """Migration 0010 on a server where the extension cannot be made: one warning line, the
    schema is otherwise complete, and search still answers (by a scan)."""
    suffix = secrets.token_hex(4)
    role, database = f"nl_plain_{suffix}", f"nl_test_noext_{suffix}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    owner = sa.create_engine(make_url(pg_server_url()).set(database=database), isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:  # may make tables, not extensions (that needs CREATE on the database)
        conn.execute(sa.text(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}"))
    owner.dispose()
    url = (
        make_url(pg_server_url())
        .set(database=database, username=role, password=None)
        .render_as_string(hide_password=False)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="newsletter.storage.migrations"):
            store = Store(url)
        try:
            warnings = [r.getMessage() for r in caplog.records if r.name == "newsletter.storage.migrations"]
            assert len(warnings) == 1 and "pg_trgm" in warnings[0] and "\n" not in warnings[0]
            assert current_revision(store.engine) == head_revision()
            add_subscriber(store, "ellen.hartley@example.net", name="Ellen")
            add_subscriber(store, "zoe@example.com", name="Zoe Hartley")
            rows, total = store.subscribers.list_page(search="HARTLEY")
            assert total == 2 and [r.email for r in rows] == ["ellen.hartley@example.net", "zoe@example.com"]
        finally:
            store.dispose()
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))


def test_pg_trgm_installed_in_a_schema_off_the_search_path_still_gets_its_indexes(pg_admin):
    """Regression: with pg_trgm already installed in another schema (hosted PostgreSQL keeps
    extensions in "extensions"), migration 0010 named the operator class unqualified and the
    whole upgrade failed ('operator class "gin_trgm_ops" does not exist')."""
    database = f"nl_test_extschema_{secrets.token_hex(4)}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    url = make_url(pg_server_url()).set(database=database)
    owner = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(sa.text("CREATE SCHEMA extensions"))
        conn.execute(sa.text("CREATE EXTENSION pg_trgm SCHEMA extensions"))
    owner.dispose()
    try:
        store = Store(url.render_as_string(hide_password=False))
        try:
            assert current_revision(store.engine) == head_revision()
            with store.engine.connect() as conn:
                indexes = conn.execute(
                    sa.text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'subscribers'"
                        " AND indexname LIKE '%trgm'"
                    )
                ).all()
            assert sorted(name for name, _ in indexes) == [
                "ix_subscribers_email_trgm",
                "ix_subscribers_name_trgm",
            ]
            assert all("extensions.gin_trgm_ops" in definition for _, definition in indexes)
            add_subscriber(store, "ellen.hartley@example.net", name="Ellen")
            rows, total = store.subscribers.list_page(search="hartley")
            assert total == 1 and rows[0].email == "ellen.hartley@example.net"
        finally:
            store.dispose()
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
