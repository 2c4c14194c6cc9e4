"""`newsletter subscribers ...`: add, remove, reactivate, list, import and export."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from newsletter.cli.common import CliError, console, err_console, reports_errors, service_from, when
from newsletter.models import SubscriberStatus


@click.group()
def subscribers() -> None:
    """Add, remove, list, import and export subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--topics", default="", help="Topics separated by ';' or ',' (empty: all topics).")
@click.pass_context
@reports_errors
def subscribers_add(ctx: click.Context, email: str, name: str, topics: str) -> None:
    """Add an active subscriber (the operator vouches for consent)."""
    from newsletter.subscriptions import add_subscriber

    subscriber, created = add_subscriber(service_from(ctx).store, email, name=name, topics=topics)
    if created:
        console.print(f"Added {subscriber.email}")
    else:
        console.print(f"{subscriber.email} is already a subscriber ({subscriber.status.value}); nothing changed")


@subscribers.command("remove")
@click.argument("email")
@click.pass_context
@reports_errors
def subscribers_remove(ctx: click.Context, email: str) -> None:
    """Delete a subscriber and their delivery history."""
    from newsletter.subscriptions import normalise_email

    address = normalise_email(email)
    if not service_from(ctx).store.subscribers.remove_subscriber(address):
        raise CliError(f"{address} is not a subscriber", "'newsletter subscribers list' shows them.")
    console.print(f"Removed {address}")


@subscribers.command("reactivate")
@click.argument("email")
@click.pass_context
@reports_errors
def subscribers_reactivate(ctx: click.Context, email: str) -> None:
    """Make a bounced or unsubscribed address active again (after checking it with its owner)."""
    from newsletter.subscriptions import normalise_email

    store = service_from(ctx).store
    subscriber = store.subscribers.find_subscriber(normalise_email(email))
    if subscriber is None:
        raise CliError(f"{email} is not a subscriber", "'newsletter subscribers list' shows them.")
    store.subscribers.set_status(subscriber.id, SubscriberStatus.ACTIVE, reason="reactivated by an operator")
    console.print(f"{subscriber.email} is active again (was {subscriber.status.value})")


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]), default=None)
@click.pass_context
@reports_errors
def subscribers_list(ctx: click.Context, status: str | None) -> None:
    """List subscribers."""
    table = Table()
    for col in ("email", "name", "status", "topics", "cadence", "last digest"):
        table.add_column(col)
    count = 0
    for s in service_from(ctx).store.subscribers.list_subscribers(status=SubscriberStatus(status) if status else None):
        table.add_row(s.email, s.name, s.status.value + (" (paused)" if s.paused else ""), ", ".join(s.topics) or "all", s.cadence.value, when(s.last_digest_at))
        count += 1
    console.print(table)
    console.print(f"{count} subscriber{'s' if count != 1 else ''}")


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@reports_errors
def subscribers_import(ctx: click.Context, file: Path) -> None:
    """Import a CSV (columns: email, name, topics). Bad rows are reported and skipped."""
    from newsletter.subscriptions import import_file

    result = import_file(service_from(ctx).store, file)
    for error in result.errors:
        err_console.print(f"skipped {error.message}")
    console.print(f"{result.added} added, {result.unchanged} already present, {len(result.errors)} bad row{'s' if len(result.errors) != 1 else ''}")
    if result.errors:
        ctx.exit(1)


@subscribers.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
@reports_errors
def subscribers_export(ctx: click.Context, file: Path | None) -> None:
    """Write every subscriber as CSV to FILE (or standard output)."""
    from newsletter.subscriptions import export_csv

    store = service_from(ctx).store
    if file is None:
        export_csv(store.subscribers.list_subscribers(), sys.stdout)
        return
    with file.open("w", newline="", encoding="utf-8") as stream:
        count = export_csv(store.subscribers.list_subscribers(), stream)
    console.print(f"{count} subscribers written to {file}")
