"""A click group that imports a command's module only when that command runs.

`newsletter --help` lists every command from a table of one-line helps, so it imports none
of them (together they pull in SQLAlchemy, premailer, Starlette, argon2 and the rest: about
a second of CPU). Each entry's loader is a function with an ordinary import inside, so
import-linter still sees every dependency. Commands added with `add_command` work as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """One command of a `LazyGroup`: how to load it, and the help line `--help` shows for it
    (the command's own short help; a test keeps the two equal)."""

    load: Callable[[], click.Command]
    summary: str


class LazyGroup(click.Group):
    """A `click.Group` whose `lazy` commands are loaded on first use."""

    def __init__(self, *args: Any, lazy: dict[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not loaded yet shows its help line from the table."""
        names = [n for n in self.list_commands(ctx) if n not in self.commands or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # A stand-in command shortens the table's line exactly as click shortens a command's.
            shown = self.commands.get(name) or click.Command(name, help=self.lazy[name].summary)
            rows.append((name, shown.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
