"""What every command shares: the consoles, the one error printer, the Service of this invocation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from newsletter.config import load_settings
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.service import Service

F = TypeVar("F", bound=Callable[..., Any])
TOP_DOMAINS = 10  # failing domains `editions ID` and `bounces --report` list; the rest are counted
# Piped or captured output gets a wide fixed width, so tables are not cut to 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


class CliError(click.ClickException):
    """An operator error: click prints it as "Error: <message>" plus a "Hint:" line, and exits 1."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    @classmethod
    def from_error(cls, error: NewsletterError) -> CliError:
        return cls(error.message, error.hint)

    def format_message(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message


def reports_errors(func: F) -> F:
    """Turn NewsletterError into a clean CLI error (no traceback for operator mistakes)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NewsletterError as exc:
            raise CliError.from_error(exc) from exc

    return wrapper  # type: ignore[return-value]


def settings_from(ctx: click.Context) -> Any:
    """The Settings of this invocation (from --config), or a CliError saying what is wrong in it."""
    try:
        return load_settings(ctx.find_root().params.get("config_path"))
    except NewsletterError as exc:
        raise CliError.from_error(exc) from exc


def service_from(ctx: click.Context) -> Service:
    """The one Service of this invocation, built on first use and closed when the command ends."""
    # Imported here, not at the top: the Service pulls in SQLAlchemy, premailer and the whole
    # pipeline (about 2 s of CPU), and `newsletter COMMAND --help` needs none of it.
    from newsletter.service import Service

    root = ctx.find_root()
    if root.obj is None:
        root.obj = Service(settings_from(ctx))
        root.call_on_close(root.obj.close)
    return root.obj


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def by_domain(rows: list[tuple[str, str, int]], *, top: int) -> list[str]:
    """The lines (count, kind, domain) of the ``top`` domains with most failures, then one
    counting the other domains and their failures: an edition can fail at hundreds of domains."""
    totals: dict[str, int] = {}
    for domain, _kind, n in rows:
        totals[domain] = totals.get(domain, 0) + n
    ranked = sorted(totals, key=lambda d: (-totals[d], d))
    shown = set(ranked[:top])
    lines = [f"  {n:>6} × {kind:<9} {domain}" for domain, kind, n in rows if domain in shown]
    if rest := ranked[top:]:
        lines.append(f"  and {len(rest):,} more domains ({sum(totals[d] for d in rest):,} failures)")
    return lines
