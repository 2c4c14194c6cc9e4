"""`newsletter config`: check the configuration and show every key."""

from __future__ import annotations

import click
from rich.table import Table

from newsletter.cli.common import console, reports_errors, service_from
from newsletter.config import Settings, describe_keys


@click.command("config")
@click.pass_context
@reports_errors
def show_config(ctx: click.Context) -> None:
    """Check the configuration and show every key with its effective value."""
    settings: Settings = service_from(ctx).settings
    table = Table()
    for col in ("key", "environment variable", "value"):
        table.add_column(col)
    for key, var, _default in describe_keys():
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        if name in ("password", "secret_key", "dkim_private_key"):  # secrets: never printed
            value = "(set)" if value else "(not set)"
        table.add_row(key, var, str(value))
    console.print(table)
