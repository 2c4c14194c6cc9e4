"""`newsletter subscribers ...`: add, edit, remove, reactivate, list, import and export.

The changes to one reader go through ``subscriptions.operations``, which audits them
under ``cli:<login>``.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from newsletter.cli.common import CliError, console, err_console, reports_errors, service_from, when
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.storage.store import Store
from newsletter.subscriptions.formats import PRESETS

if TYPE_CHECKING:
    from newsletter.subscriptions.operations import Actor

FORMAT_NAMES = tuple(PRESETS)
SHOWN_ERRORS = 10  # bad rows printed; --errors FILE has them all
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


@click.group()
def subscribers() -> None:
    """Add, edit, remove, list, import and export subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--topics", default="", help="Topics separated by ';' or ',' (empty: all topics).")
@click.pass_context
@reports_errors
def subscribers_add(ctx: click.Context, email: str, name: str, topics: str) -> None:
    """Add an active subscriber (the operator vouches for consent)."""
    from newsletter.subscriptions.operations import add_reader

    store = service_from(ctx).store
    subscriber, created = add_reader(store, cli_actor(), email, name=name, topics=topics)
    _warn_unknown_topics(store, dict.fromkeys(subscriber.topics, 1))
    if created and subscriber.status is not SubscriberStatus.ACTIVE:
        # The suppression list remembers who left: adding them back is not their consent.
        console.print(
            f"Added {subscriber.email} as {subscriber.status.value}: it is on the suppression list."
            f" Check with its owner, then 'newsletter subscribers reactivate {subscriber.email}'"
        )
    elif created:
        console.print(f"Added {subscriber.email}")
    else:
        console.print(
            f"{subscriber.email} is already a subscriber ({subscriber.status.value}); nothing changed"
        )


@subscribers.command("edit")
@click.argument("email")
@click.option("--topics", default=None, help="Topics separated by ';' or ',' (empty: all topics).")
@click.option("--cadence", type=click.Choice([c.value for c in Cadence]), default=None, help="How often.")
@click.option("--paused/--unpaused", default=None, help="Hold their digests, or send them again.")
@click.pass_context
@reports_errors
def subscribers_edit(
    ctx: click.Context, email: str, topics: str | None, cadence: str | None, paused: bool | None
) -> None:
    """Change a subscriber's topics, cadence or pause (options left out stay as they are)."""
    from newsletter.subscriptions.operations import edit_reader

    if topics is None and cadence is None and paused is None:
        raise CliError("nothing to change", "Give --topics, --cadence, --paused or --unpaused.")
    store = service_from(ctx).store
    subscriber = edit_reader(
        store,
        cli_actor(),
        _find(store, email),
        topics=topics,
        cadence=Cadence(cadence) if cadence else None,
        paused=paused,
    )
    _warn_unknown_topics(store, dict.fromkeys(subscriber.topics, 1))
    console.print(
        f"{subscriber.email}: topics {', '.join(subscriber.topics) or 'all'}, {subscriber.cadence.value}"
        + (", paused" if subscriber.paused else ""),
        markup=False,
    )


@subscribers.command("remove")
@click.argument("email")
@click.option(
    "--forget",
    is_flag=True,
    help="Erase every personal detail (the person asked);"
    " keep only a hash so the address is never mailed again.",
)
@click.pass_context
@reports_errors
def subscribers_remove(ctx: click.Context, email: str, forget: bool) -> None:
    """Delete a subscriber and their delivery history
    (an unsubscribed or bounced address stays suppressed)."""
    from newsletter.subscriptions import normalise_email
    from newsletter.subscriptions.operations import remove_reader

    address = normalise_email(email)
    if not remove_reader(service_from(ctx).store, cli_actor(), address, forget=forget):
        raise CliError(f"{address} is not a subscriber", "'newsletter subscribers list' shows them.")
    if forget:
        console.print(f"Erased {address}: only a hash of the mailbox is kept, so it is never mailed again")
    else:
        console.print(f"Removed {address}")


@subscribers.command("reactivate")
@click.argument("email")
@click.pass_context
@reports_errors
def subscribers_reactivate(ctx: click.Context, email: str) -> None:
    """Make a bounced or unsubscribed address active again (after checking it with its owner)."""
    from newsletter.subscriptions.operations import reactivate_reader

    store = service_from(ctx).store
    subscriber = _find(store, email)
    if subscriber.status is SubscriberStatus.ACTIVE:
        console.print(f"{subscriber.email} is already active; nothing changed")
        return
    reactivate_reader(store, cli_actor(), subscriber)
    console.print(f"{subscriber.email} is active again (was {subscriber.status.value})")


def cli_actor() -> Actor:
    """The audit log's name for whoever runs the command: ``cli:<operating-system login>``."""
    from newsletter.subscriptions.operations import Actor

    try:
        login = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment and no passwd entry (some containers)
        login = f"uid {os.getuid()}"
    return Actor(f"cli:{login}")


def _find(store: Store, email: str) -> Subscriber:
    """The subscriber with this address, or the CLI's error naming where to look."""
    from newsletter.subscriptions import normalise_email

    subscriber = store.subscribers.find_subscriber(normalise_email(email))
    if subscriber is None:
        raise CliError(f"{email} is not a subscriber", "'newsletter subscribers list' shows them.")
    return subscriber


@subscribers.command("list")
@click.option("--search", default="", help="Only addresses or names containing this text (case ignored).")
@click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriberStatus]),
    default=None,
    help="Only subscribers with this status.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Rows per page.")
@click.option(
    "--page",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Which page (ordered by when they were added).",
)
@click.pass_context
@reports_errors
def subscribers_list(ctx: click.Context, search: str, status: str | None, limit: int, page: int) -> None:
    """List subscribers a page at a time, with how many match (works on a read-only database)."""
    wanted = SubscriberStatus(status) if status else None
    rows, total = service_from(ctx).store.subscribers.list_page(
        search=search, status=wanted, limit=limit, offset=(page - 1) * limit
    )
    table = Table()
    for col in ("email", "name", "status", "topics", "cadence", "last digest"):
        table.add_column(col)
    for s in rows:
        table.add_row(
            s.email,
            s.name,
            s.status.value + (" (paused)" if s.paused else ""),
            ", ".join(s.topics) or "all",
            s.cadence.value,
            when(s.last_digest_at),
        )
    if rows:
        console.print(table)
    pages = max(1, -(-total // limit))
    first = (page - 1) * limit + 1
    shown = f"{first:,}-{first + len(rows) - 1:,} of " if rows else ("" if page == 1 else "none of ")
    console.print(
        f"{shown}{total:,} subscriber{'s' if total != 1 else ''}"
        + (f" (page {page} of {pages})" if total > limit or page > 1 else "")
    )
    if page < pages:
        console.print(f"Next page: --page {page + 1}")


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default=None,
    help="The tool that made the file (default: found from the header).",
)
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar='FIELD="COLUMN"',
    help='Read a field from a column, e.g. --map email="E-Mail"'
    " (fields: email, name, topics, status, cadence).",
)
@click.option(
    "--update",
    is_flag=True,
    help="Also change the names, topics and cadence of readers already here"
    " (only from the columns the file has).",
)
@click.option(
    "--errors",
    "errors_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bad rows, with their line numbers and reasons, to this CSV.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The file's text encoding (Excel on Windows: cp1252).",
)
@click.pass_context
@reports_errors
def subscribers_import(
    ctx: click.Context,
    file: Path,
    fmt: str | None,
    mapping: tuple[str, ...],
    update: bool,
    errors_file: Path | None,
    encoding: str,
) -> None:
    """Import a CSV: ours (email, name, topics, status, cadence) or a Mailchimp, listmonk,
    Substack or Ghost export.

    Unsubscribed, cleaned, blocklisted or disabled readers come in as unsubscribed or
    bounced, never active; an address on the suppression list stays suppressed. Bad
    rows are counted and skipped (see --errors).
    """
    from newsletter.subscriptions.formats import parse_mapping
    from newsletter.subscriptions.importer import count_lines, import_file, write_bad_rows

    store = service_from(ctx).store
    columns = parse_mapping(mapping)
    total = max(count_lines(file) - 1, 0) if file.is_file() else 0
    with ImportProgress(total) as progress:
        result = import_file(
            store, file, encoding=encoding, fmt=fmt, mapping=columns, update=update, progress=progress.update
        )
    console.print(
        f"Read {file} as {result.format}"
        f" ({DELIMITER_NAMES.get(result.delimiter, repr(result.delimiter))}-separated)",
        markup=False,
    )
    if result.unknown_columns:
        err_console.print(
            f"Not imported: columns {', '.join(repr(c) for c in result.unknown_columns)}"
            " (nothing reads them; --map FIELD=COLUMN takes one)",
            markup=False,
        )
    if result.ignored_columns:
        listed = ", ".join(result.ignored_columns[:6]) + (", ..." if len(result.ignored_columns) > 6 else "")
        console.print(
            f"{len(result.ignored_columns)} column(s) of {result.format}'s own left out ({listed})",
            markup=False,
        )
    for bad in result.bad_rows[:SHOWN_ERRORS]:
        err_console.print(f"invalid: line {bad.line}: {bad.reason}", markup=False)
    if errors_file is not None and result.bad_rows:
        with errors_file.open("w", newline="", encoding="utf-8") as stream:
            written = write_bad_rows(result, stream)
        err_console.print(f"{written:,} bad row(s) written to {errors_file}", markup=False)
    elif len(result.bad_rows) > SHOWN_ERRORS:
        err_console.print(
            f"... and {len(result.bad_rows) - SHOWN_ERRORS:,} more;"
            " --errors FILE writes every bad row with its line number",
            markup=False,
        )
    _warn_unknown_topics(store, result.unknown_topics)
    console.print(result.summary())
    if result.bad_rows:
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


class ImportProgress:
    """A rich bar on a terminal; otherwise a plain line every few seconds (cron, logs)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.last_line = time.monotonic()

    def __enter__(self) -> ImportProgress:
        if err_console.is_terminal:
            self.bar = Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("import", total=self.total or None)
        return self

    def update(self, lines: int) -> None:
        """``lines``: lines read so far, the header included."""
        done = max(lines - 1, 0)
        if self.total:
            done = min(done, self.total)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_PROGRESS_EVERY:
            self.last_line = now
            of = f" of {self.total:,}" if self.total else ""
            err_console.print(f"importing: {done:,}{of} lines read", markup=False)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.stop()


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}


def _warn_unknown_topics(store: Store, topics: Mapping[str, int]) -> None:
    """One warning naming the topics no stored report has (a reader limited to them gets nothing)."""
    from newsletter.subscriptions import unknown_topics

    missing = unknown_topics(store, topics)
    if not missing:
        return
    known = store.reports.all_topics()
    named = ", ".join(
        repr(t) + (f" ({topics[t]:,} rows)" if topics.get(t, 0) > 1 else "") for t in missing[:8]
    )
    have = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    err_console.print(
        f"Warning: no report has the topic(s) {named}: a reader limited to them gets nothing. Reports have:"
        f" {have}",
        markup=False,
    )
