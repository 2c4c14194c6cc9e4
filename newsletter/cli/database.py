"""`newsletter db ...`: schema versions (Alembic migrations)."""

from __future__ import annotations

import click

from newsletter.cli.common import console, reports_errors, service_from


@click.group()
def db() -> None:
    """Schema versions (Alembic migrations)."""


@db.command("upgrade")
@click.pass_context
@reports_errors
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending schema migration (back up the database first)."""
    from newsletter.storage.migrations import upgrade
    from newsletter.storage.store import Store

    store = Store(service_from(ctx).settings.database.url, create=False)
    before, after = upgrade(store.engine)
    console.print(
        f"Database schema: {before or 'empty'} -> {after}"
        if before != after
        else f"Database schema is current ({after})"
    )
    store.dispose()


@db.command("current")
@click.pass_context
@reports_errors
def db_current(ctx: click.Context) -> None:
    """Show the database's schema revision and the one this release needs."""
    from newsletter.storage.migrations import current_revision, head_revision
    from newsletter.storage.store import Store

    store = Store(service_from(ctx).settings.database.url, create=False)
    current, head = current_revision(store.engine), head_revision()
    console.print(
        f"database: {current or 'empty'}; this release: {head}"
        + ("" if current == head else "  -> run 'newsletter db upgrade'")
    )
    store.dispose()
