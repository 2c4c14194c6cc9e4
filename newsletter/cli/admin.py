"""`newsletter admin ...`: the operator console's accounts (the console itself runs in `serve`)."""

from __future__ import annotations

import sys
from datetime import timedelta

import click
from rich.table import Table

from newsletter.admin.accounts import ROLES, AccountError, Accounts
from newsletter.cli.common import CliError, console, service_from, when


@click.group()
def admin() -> None:
    """Operator console accounts: create users, set passwords, list them."""


def _accounts(ctx: click.Context) -> Accounts:
    service = service_from(ctx)
    return Accounts(service.store.accounts, idle=timedelta(seconds=service.settings.admin.session_idle))


def _read_password() -> str:
    """From a prompt (typed twice, hidden) on a terminal, else the first line of standard input;
    never an argument."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


@admin.command("create-user")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="viewer",
    show_default=True,
    help="viewer reads; editor also previews, test-sends and sends; admin also manages users.",
)
@click.pass_context
def create_user(ctx: click.Context, email: str, role: str) -> None:
    """Make a console user; the password is read from a prompt or standard input."""
    accounts = _accounts(ctx)
    try:
        user = accounts.create_user(email, role=role, password=_read_password())
    except AccountError as exc:
        raise CliError.from_error(exc) from exc
    accounts.store.audit(actor="cli", action="user.create", target=user.email, detail=f"role {role}")
    settings = service_from(ctx).settings
    where = (
        f"http://{settings.admin.host}:{settings.admin.port}/admin/"
        if settings.admin.port
        else f"http://{settings.web.host}:{settings.web.port}/admin/"
    )
    console.print(f"Created {user.role} {user.email}. Start 'newsletter serve' and open {where}")


@admin.command("set-password")
@click.argument("email")
@click.pass_context
def set_password(ctx: click.Context, email: str) -> None:
    """Change a user's password (read from a prompt or standard input); ends their sessions and
    unlocks them."""
    accounts = _accounts(ctx)
    try:
        user = accounts.set_password(email, _read_password())
    except AccountError as exc:
        raise CliError.from_error(exc) from exc
    accounts.store.audit(actor="cli", action="user.password", target=user.email)
    console.print(f"Password of {user.email} changed; their sessions ended.")


@admin.command("users")
@click.pass_context
def users(ctx: click.Context) -> None:
    """List console users."""
    table = Table()
    for column in ("email", "role", "created", "last login", "locked until"):
        table.add_column(column)
    for user in _accounts(ctx).store.list_users():
        table.add_row(
            user.email, user.role, when(user.created_at), when(user.last_login_at), when(user.locked_until)
        )
    console.print(table)
