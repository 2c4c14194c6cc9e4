"""The operator CLI: `newsletter ...` and `python -m newsletter ...`.

The only place (with the web app and the scheduler) that talks to humans:
errors from the core become "Error: ..." plus a hint and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from newsletter.config import Settings, describe_keys, load_settings
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.models import Cadence, EditionStatus, SubscriberStatus
from newsletter.service import Service

F = TypeVar("F", bound=Callable[..., Any])
# Piped or captured output gets a wide fixed width, so tables are not cut to 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


class CliError(click.ClickException):
    """A core error shown as one line plus its hint."""

    def __init__(self, error: NewsletterError) -> None:
        super().__init__(error.message)
        self.hint = error.hint

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.message}", err=True)
        if self.hint:
            click.echo(f"Hint: {self.hint}", err=True)


def reports_errors(func: F) -> F:
    """Turn NewsletterError into a clean CLI error (no traceback for operator mistakes)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NewsletterError as exc:
            raise CliError(exc) from exc

    return wrapper  # type: ignore[return-value]


def service_from(ctx: click.Context) -> Service:
    root = ctx.find_root()
    if root.obj is None:
        try:
            settings = load_settings(root.params.get("config_path"))
        except NewsletterError as exc:
            raise CliError(exc) from exc
        root.obj = Service(settings)
        root.call_on_close(root.obj.close)
    return root.obj  # type: ignore[no-any-return]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config file (else $NEWSLETTER_CONFIG, else ./newsletter.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log what the service does.")
@click.version_option(package_name="newsletter")
def main(config_path: str | None, verbose: bool) -> None:
    """Video Surveillance News: email digests of the newest industry reports.

    Start with 'newsletter demo' to see a digest delivered to a local sink.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- sending ---------------------------------------------------------------------


@main.command()
@click.option("--key", default=None, help="Edition key (default: manual-<UTC time>). Rerunning a key resumes it, never resends.")
@click.option("--resume", "resume", is_flag=True, help="Finish the newest unfinished edition instead of starting one.")
@click.option("--no-fetch", is_flag=True, help="Use the stored reports; do not fetch the feed first.")
@click.option("--plan-only", is_flag=True, help="Write the edition's outbox and stop; 'newsletter worker' processes send it.")
@click.option("--retry-unknown", is_flag=True, help="With --resume: also resend rows whose outcome is unknown (same Message-ID; the reader may get two copies).")
@click.pass_context
@reports_errors
def send(ctx: click.Context, key: str | None, resume: bool, no_fetch: bool, plan_only: bool, retry_unknown: bool) -> None:
    """Fetch the feed and send an edition through the configured SMTP server."""
    from newsletter.edition_lock import hold_send_lock
    from newsletter.schedules import schedule_for_key

    service = service_from(ctx)
    runner = service.runner
    progress = _progress()
    task: list[Any] = []

    def planned(total: int) -> None:
        if total and sys.stdout.isatty():
            progress.start()
            task.append(progress.add_task("sending", total=total))

    def outcome(_o: Any) -> None:
        if task:
            progress.advance(task[0])

    try:
        if retry_unknown and not resume:
            raise click.UsageError("--retry-unknown goes with --resume")
        if plan_only and resume:
            raise click.UsageError("--plan-only starts a new edition; it does not go with --resume")
        if resume:
            unfinished = service.store.list_editions(statuses=[EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED], limit=1)
            if retry_unknown:
                with_unknown = [e for e in service.store.list_editions(limit=50) if e.counts.get("unknown")]
                if with_unknown:
                    edition = with_unknown[0]
                    requeued = service.store.requeue_unknown(edition.id)
                    # The edition had ended; its unknown rows make it unfinished again.
                    service.store.set_edition_status(edition.id, EditionStatus.SENDING, reason=f"{requeued} unknown rows requeued by an operator")
                    console.print(f"{requeued} rows of edition {edition.key} whose outcome was unknown will be sent again (same Message-ID).")
                    unfinished = [service.store.get_edition(edition.id)]  # type: ignore[list-item]
            if not unfinished:
                console.print("Nothing to resume: every edition has ended.")
                return
            edition = unfinished[0]
            counts = ", ".join(f"{n} {s}" for s, n in sorted(edition.counts.items())) or "no rows yet"
            console.print(f"Resuming edition {edition.key} (#{edition.id}, {edition.status.value}): {counts}")
            # A database-held lock per schedule: never two sends of one schedule at once.
            with hold_send_lock(service.store.engine, edition.schedule):
                result = runner.resume(edition, on_planned=planned, on_outcome=outcome)
        else:
            key = key or "manual-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            schedule = schedule_for_key(key)
            # A key of a schedule (daily-..., weekly-...) sends to that schedule's cadence only,
            # exactly as the scheduler would; any other key is a manual edition for everyone.
            cadences = [Cadence(schedule)] if schedule in (c.value for c in Cadence) else None
            with hold_send_lock(service.store.engine, schedule):
                result = runner.run(
                    key=key, schedule=schedule, cadences=cadences, fetch=not no_fetch, send=not plan_only, on_planned=planned, on_outcome=outcome
                )
    finally:
        if task:
            progress.stop()
    _print_result(result)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True)


def _print_result(result: Any) -> None:
    """The summary table: sent / failed / skipped, plus the states that need attention."""
    edition = result.edition
    counts = edition.counts
    table = Table(title=f"Edition {edition.key} (#{edition.id}): {edition.status.value}")
    table.add_column("outcome")
    table.add_column("subscribers", justify="right")
    table.add_column("meaning")
    table.add_row("sent", str(counts.get("sent", 0)), "accepted by the SMTP server")
    table.add_row("failed", str(counts.get("failed", 0)), "refused for good (see 'newsletter editions %d')" % edition.id)
    table.add_row("skipped", str(counts.get("suppressed", 0)), "left or bounced during the send")
    for state, meaning in (("deferred", "will be retried later"), ("unknown", "connection lost after the data"), ("pending", "not sent yet"), ("sending", "with another sender")):
        if counts.get(state):
            table.add_row(state, str(counts[state]), meaning)
    console.print(table)
    if result.message and result.message != "finished":
        console.print(result.message)


@main.command()
@click.option("--subscriber", "email", default=None, help="Preview for one subscriber (default: the first active one).")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None, help="Write the personalised HTML here.")
@click.option("--no-fetch", is_flag=True, help="Use the stored reports; do not fetch the feed first.")
@click.pass_context
@reports_errors
def preview(ctx: click.Context, email: str | None, out: str | None, no_fetch: bool) -> None:
    """Render a digest without sending; list which reports are in and why."""
    from newsletter.planner import why_included
    from newsletter.preview import render_preview

    service = service_from(ctx)
    if not no_fetch:
        service.runner.ingest()
    result = render_preview(service, email=email)
    console.print(f"[bold]To:[/bold] {result.subscriber.email}   [bold]Subject:[/bold] {result.subject or '(no digest: nothing new)'}")
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
    if out and result.html:
        Path(out).write_text(result.html, encoding="utf-8")
        console.print(f"HTML written to {out} ({len(result.html.encode()):,} bytes)")


@main.command()
@click.option("--maildir", type=click.Path(file_okay=False), default="demo-output/maildir", show_default=True, help="Where the sink stores the delivered mail.")
@click.pass_context
@reports_errors
def demo(ctx: click.Context, maildir: str) -> None:
    """Deliver a digest of the sample feed to the sample subscribers, through a local sink."""
    from newsletter.demo import run_demo

    root = ctx.find_root()
    settings = load_settings(root.params.get("config_path"))
    run_demo(settings, maildir=Path(maildir), console=console)


@main.command()
@click.option("--once", is_flag=True, help="Drain what is claimable now, then exit (default: keep polling).")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600), help="Seconds between looks for work.")
@click.pass_context
@reports_errors
def worker(ctx: click.Context, once: bool, poll: float) -> None:
    """Only drain outboxes: help send editions that are already planned (run several, on several machines)."""
    import time

    service = service_from(ctx)
    console.print(f"Worker started (database {service.settings.database.url.split('@')[-1]}); Ctrl-C stops.")
    try:
        while True:
            worked = False
            for edition_id in service.store.claimable_editions():
                edition = service.store.get_edition(edition_id)
                if edition is None:
                    continue
                result = service.runner.drain(edition)
                worked = True
                console.print(f"edition {edition.key}: {', '.join(f'{n} {s}' for s, n in sorted(result.tally.items())) or 'nothing to do'}")
            if once and not worked:
                return
            if not worked:
                time.sleep(poll)
    except KeyboardInterrupt:
        console.print("Stopped; rows this worker held go back to the others when their lease runs out.")


# -- editions ---------------------------------------------------------------------


@main.command()
@click.argument("edition_id", required=False, type=int)
@click.option("--limit", default=20, show_default=True)
@click.pass_context
@reports_errors
def editions(ctx: click.Context, edition_id: int | None, limit: int) -> None:
    """List editions, or show one with its counts and most common failure replies."""
    store = service_from(ctx).store
    if edition_id is None:
        table = Table()
        for col in ("id", "key", "status", "started", "finished", "sent", "failed", "deferred", "unknown", "other"):
            table.add_column(col)
        for e in store.list_editions(limit=limit):
            c = e.counts
            other = sum(n for s, n in c.items() if s not in ("sent", "failed", "deferred", "unknown"))
            table.add_row(
                str(e.id), e.key, e.status.value, _when(e.started_at), _when(e.finished_at),
                str(c.get("sent", 0)), str(c.get("failed", 0)), str(c.get("deferred", 0)), str(c.get("unknown", 0)), str(other),
            )
        console.print(table)
        return
    edition = store.get_edition(edition_id)
    if edition is None:
        raise click.ClickException(f"no edition #{edition_id}; 'newsletter editions' lists them")
    console.print(f"[bold]Edition {edition.key}[/bold] (#{edition.id}, schedule {edition.schedule}): {edition.status.value}")
    if edition.reason:
        console.print(f"Reason: {edition.reason}")
    console.print(f"As of {_when(edition.as_of)}; started {_when(edition.started_at)}; finished {_when(edition.finished_at)}")
    for state, n in sorted(edition.counts.items()):
        console.print(f"  {state:<11} {n}")
    replies = store.failure_replies(edition.id)
    if replies:
        console.print("Most common failure replies:")
        for code, reply, n in replies:
            console.print(f"  {n:>6} × {code or '-'} {reply}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# -- subscribers ------------------------------------------------------------------


@main.group()
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
    if not service_from(ctx).store.remove_subscriber(address):
        raise CliError(SubscriberError(f"{address} is not a subscriber", hint="'newsletter subscribers list' shows them."))
    console.print(f"Removed {address}")


@subscribers.command("reactivate")
@click.argument("email")
@click.pass_context
@reports_errors
def subscribers_reactivate(ctx: click.Context, email: str) -> None:
    """Make a bounced or unsubscribed address active again (after checking it with its owner)."""
    from newsletter.subscriptions import normalise_email

    store = service_from(ctx).store
    subscriber = store.find_subscriber(normalise_email(email))
    if subscriber is None:
        raise CliError(SubscriberError(f"{email} is not a subscriber", hint="'newsletter subscribers list' shows them."))
    store.set_status(subscriber.id, SubscriberStatus.ACTIVE, reason="reactivated by an operator")
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
    for s in service_from(ctx).store.list_subscribers(status=SubscriberStatus(status) if status else None):
        table.add_row(s.email, s.name, s.status.value + (" (paused)" if s.paused else ""), ", ".join(s.topics) or "all", s.cadence.value, _when(s.last_digest_at))
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
        export_csv(store.list_subscribers(), sys.stdout)
        return
    with file.open("w", newline="", encoding="utf-8") as stream:
        count = export_csv(store.list_subscribers(), stream)
    console.print(f"{count} subscribers written to {file}")


# -- bounces ----------------------------------------------------------------------


@main.command()
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback is exposed to the network.")
@click.option("--port", default=2525, show_default=True, type=click.IntRange(0, 65535), help="SMTP port for delivery status notifications.")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), default=Path("subscribers/bounces"), show_default=True, help="Audit copy of everything received.")
@click.option("--from-maildir", "from_maildir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="Process bounces saved in this Maildir instead of listening.")
@click.pass_context
@reports_errors
def bounces(ctx: click.Context, listen: str, port: int, maildir: Path, from_maildir: Path | None) -> None:
    """Receive bounces (RFC 3464 DSNs to the VERP address) and suppress failed addresses."""
    import time

    from newsletter.bounces import BounceProcessor, BounceReceiver, process_maildir
    from newsletter.suppression import Suppressor

    service = service_from(ctx)
    processor = BounceProcessor(service.store, service.signer, Suppressor(service.settings, service.store))
    if from_maildir is not None:
        results = process_maildir(processor, from_maildir)
        for key, verdict in results:
            console.print(f"{key}: {verdict.action} ({verdict.reason})")
        suppressed = sum(1 for _, v in results if v.action == "suppressed")
        console.print(f"{len(results)} messages, {suppressed} subscribers suppressed")
        return
    if listen not in ("127.0.0.1", "::1", "localhost"):
        err_console.print(f"Warning: listening on {listen}; anyone who can reach it can suppress subscribers with forged bounces.")
    with BounceReceiver(processor, maildir=maildir, host=listen, port=port) as receiver:
        console.print(f"Receiving bounces on {listen}:{receiver.port}; audit copies in {maildir}. Ctrl-C stops.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("Stopped.")


# -- database ---------------------------------------------------------------------


@main.group()
def db() -> None:
    """Schema versions (Alembic migrations)."""


@db.command("upgrade")
@click.pass_context
@reports_errors
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending schema migration (back up the database first)."""
    from newsletter.migrations import upgrade
    from newsletter.store import Store

    store = Store(service_from(ctx).settings.database.url, create=False)
    before, after = upgrade(store.engine)
    console.print(f"Database schema: {before or 'empty'} -> {after}" if before != after else f"Database schema is current ({after})")
    store.dispose()


@db.command("current")
@click.pass_context
@reports_errors
def db_current(ctx: click.Context) -> None:
    """Show the database's schema revision and the one this release needs."""
    from newsletter.migrations import current_revision, head_revision
    from newsletter.store import Store

    store = Store(service_from(ctx).settings.database.url, create=False)
    current, head = current_revision(store.engine), head_revision()
    console.print(f"database: {current or 'empty'}; this release: {head}" + ("" if current == head else "  -> run 'newsletter db upgrade'"))
    store.dispose()


# -- configuration ----------------------------------------------------------------


@main.command("config")
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
        if name in ("password", "secret_key"):
            value = "(set)" if value else "(not set)"
        table.add_row(key, var, str(value))
    console.print(table)


def _register_optional_commands() -> None:
    """Commands that live beside the parts they drive (sink, web, scheduler...)."""
    from newsletter.sink.cli import sink_command

    main.add_command(sink_command, "sink")
    main.add_command(__import__("newsletter.scheduler_cli", fromlist=["schedule_command"]).schedule_command, "schedule")
    main.add_command(__import__("newsletter.web.cli", fromlist=["serve_command"]).serve_command, "serve")


_register_optional_commands()
