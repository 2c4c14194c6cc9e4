"""`newsletter preview`: what one subscriber would get now, and why."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from newsletter.cli.common import CliError, console, reports_errors, service_from


@click.command()
@click.option(
    "--subscriber", "email", default=None, help="Preview for one subscriber (default: the first active one)."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the personalised HTML here.",
)
@click.option("--no-fetch", is_flag=True, help="Use the stored reports; do not fetch the feed first.")
@click.pass_context
@reports_errors
def preview(ctx: click.Context, email: str | None, out: str | None, no_fetch: bool) -> None:
    """Render a digest without sending; list which reports are in and why.

    With --out and nothing new for the reader, nothing is written and the command exits 1
    saying so (a script never takes an old file for this reader's digest).
    """
    from newsletter.content.feed_state import future_reports
    from newsletter.content.planner import why_included
    from newsletter.editions.preview import read_feed, render_preview

    service = service_from(ctx)
    feed = "" if no_fetch else read_feed(service.runner)
    result = render_preview(service.runner, email=email, feed=feed)
    if out and not result.html:
        raise CliError(
            f"nothing new for {result.subscriber.email} now, so there is no digest:"
            f" nothing was written to {out}",
            hint="Preview another reader (--subscriber EMAIL), or wait for new reports in the feed."
            + (f" Note: {feed}." if feed else ""),
        )
    if feed:
        console.print(f"Note: {feed}", markup=False)
    subject = result.subject or "(no digest: nothing new)"
    console.print(f"[bold]To:[/bold] {result.subscriber.email}   [bold]Subject:[/bold] {subject}")
    console.print(f"Why: {result.selection.reason}")
    table = Table()
    table.add_column("published")
    table.add_column("report")
    table.add_column("topics")
    table.add_column("why")
    for report in result.selection.reports:
        table.add_row(
            f"{report.published:%Y-%m-%d}",
            report.title + (" [members]" if report.members_only else ""),
            ", ".join(report.topics),
            why_included(result.subscriber, report),
        )
    console.print(table)
    if result.held.reports:
        # Stored, but not in any digest until the settle window has passed (reports.settle).
        console.print(f"Not in any digest yet: {result.held}", markup=False)
    for held in future_reports(service.store, now=service.runner.clock()):
        # Dated ahead of now: not in any digest until then (the log says so at each fetch too).
        console.print(
            f"Held back: {held.title!r} is dated {held.published:%Y-%m-%d %H:%M} UTC, in the future",
            markup=False,
        )
    if out:
        Path(out).write_text(result.html, encoding="utf-8")
        console.print(f"HTML written to {out} ({len(result.html.encode()):,} bytes)")
