"""`newsletter editions`, `pause` and `resume`: inspect editions, pause one, resume one.

Pause and resume are the engine's (``EditionRunner.pause`` / ``resume``), the same the console
and the API call: a pause stops every sender of the edition at its next batch, wherever it runs.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from newsletter.cli.common import (
    TOP_DOMAINS,
    CliError,
    by_domain,
    console,
    reports_errors,
    service_from,
    when,
)
from newsletter.cli.sending import operator, send
from newsletter.models import Edition, EditionStatus


def find_edition(service: Any, ref: str | None, *, statuses: list[EditionStatus]) -> Edition:
    """The edition named by key or #id, else the newest one in ``statuses``; CliError if none."""
    store = service.store
    if ref is None:
        found = store.editions.list_editions(statuses=statuses, limit=1)
        if not found:
            raise CliError(
                f"no {' or '.join(s.value for s in statuses)} edition",
                hint="'newsletter editions' lists them; name one by its key or id.",
            )
        return found[0]
    edition = store.editions.find_edition(ref)
    if edition is None and ref.lstrip("#").isdigit():
        edition = store.editions.get_edition(int(ref.lstrip("#")))
    if edition is None:
        raise CliError(
            f"no edition {ref!r}", hint="'newsletter editions' lists them with their keys and ids."
        )
    return edition


@click.command()
@click.argument("edition_ref", metavar="[EDITION_KEY_OR_ID]", required=False)
@click.option("--reason", default="", help="Why, for the edition's status and the audit log.")
@click.pass_context
@reports_errors
def pause(ctx: click.Context, edition_ref: str | None, reason: str) -> None:
    """Pause an edition (default: the newest one sending): every sender stops at its next batch."""
    service = service_from(ctx)
    edition = find_edition(service, edition_ref, statuses=[EditionStatus.SENDING, EditionStatus.PLANNED])
    by = operator()
    paused = service.runner.pause(edition, by=by, reason=f"paused by {by}: {reason}" if reason else "")
    console.print(f"Edition {paused.key} (#{paused.id}) is paused: {paused.reason}.")
    console.print(
        "Its senders (newsletter send, the scheduler, the console, workers) stop at their next batch and give"
        " their unsent rows back; nothing sends it until it is resumed."
    )
    console.print(f"Resume it with: newsletter resume {paused.key}")


@click.command()
@click.argument("edition_ref", metavar="[EDITION_KEY_OR_ID]", required=False)
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Also resend rows whose outcome is unknown (same Message-ID; the reader may get two copies).",
)
@click.option("--now", "now", is_flag=True, help="Retry deferred rows at once instead of waiting.")
@click.pass_context
def resume(ctx: click.Context, edition_ref: str | None, retry_unknown: bool, now: bool) -> None:
    """Resume a paused or unfinished edition (default: the newest one); the same as 'send --resume'."""
    key = None
    if edition_ref is not None:
        key = find_edition(service_from(ctx), edition_ref, statuses=[]).key
    ctx.invoke(send, resume=True, key=key, retry_unknown=retry_unknown, now=now)


@click.command()
@click.argument("edition_id", required=False, type=int)
@click.option("--limit", default=20, show_default=True)
@click.pass_context
@reports_errors
def editions(ctx: click.Context, edition_id: int | None, limit: int) -> None:
    """List editions, or show one with its counts and most common failure replies."""
    store = service_from(ctx).store
    if edition_id is None:
        table = Table()
        for col in (
            "id",
            "key",
            "status",
            "started",
            "finished",
            "sent",
            "failed",
            "deferred",
            "unknown",
            "other",
        ):
            table.add_column(col)
        for e in store.editions.list_editions(limit=limit):
            c = e.counts
            other = sum(n for s, n in c.items() if s not in ("sent", "failed", "deferred", "unknown"))
            table.add_row(
                str(e.id),
                e.key,
                e.status.value,
                when(e.started_at),
                when(e.finished_at),
                str(c.get("sent", 0)),
                str(c.get("failed", 0)),
                str(c.get("deferred", 0)),
                str(c.get("unknown", 0)),
                str(other),
            )
        console.print(table)
        return
    edition = store.editions.get_edition(edition_id)
    if edition is None:
        raise click.ClickException(f"no edition #{edition_id}; 'newsletter editions' lists them")
    console.print(
        f"[bold]Edition {edition.key}[/bold] (#{edition.id}, schedule {edition.schedule}): "
        f"{edition.status.value}"
    )
    if edition.reason:
        console.print(f"Reason: {edition.reason}")
    console.print(
        f"As of {when(edition.as_of)}; started {when(edition.started_at)}; "
        f"finished {when(edition.finished_at)}"
    )
    for state, n in sorted(edition.counts.items()):
        console.print(f"  {state:<11} {n}")
    readers, carried = store.outbox.carried(edition.id)
    if readers:
        console.print(
            f"{readers} readers have reports carried to their next digest ({carried} in all): "
            "over digest.max_reports, sent oldest first"
        )
    replies = store.outbox.failure_replies(edition.id)
    if replies:
        console.print("Most common failure replies:")
        for code, reply, n in replies:
            console.print(f"  {n:>6} × {code or '-'} {reply}")
    judged = store.bounces.kinds_by_domain(edition_id=edition.id)
    if judged:
        # Policy refusals (blocked) never suppress a reader: they are the operator's to see.
        console.print("Failures by receiving domain (hard/soft count against readers; blocked is about us):")
        for line in by_domain(judged, top=TOP_DOMAINS):
            console.print(line)
