"""`newsletter send`, `worker` and `editions`: start, drain and inspect editions."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from newsletter.cli.common import CliError, console, reports_errors, service_from, when
from newsletter.cli.send_result import report_result
from newsletter.models import Cadence, DeliveryState, Edition, EditionStatus


@click.command()
@click.option(
    "--key",
    default=None,
    help="Edition key (default: manual-<UTC time>). Rerunning a key resumes it, never resends.",
)
@click.option(
    "--resume", "resume", is_flag=True, help="Finish the newest unfinished edition instead of starting one."
)
@click.option("--no-fetch", is_flag=True, help="Use the stored reports; do not fetch the feed first.")
@click.option(
    "--plan-only",
    is_flag=True,
    help="Write the edition's outbox and stop; 'newsletter worker' processes send it.",
)
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="With --resume: also resend rows whose outcome is unknown"
    " (same Message-ID; the reader may get two copies).",
)
@click.option(
    "--now",
    "now",
    is_flag=True,
    help="With --resume: retry deferred rows at once instead of waiting for their backoff.",
)
@click.option(
    "--test-to",
    "test_to",
    default=None,
    metavar="EMAIL",
    help="Send the next digest, as a reader would get it, to this one inbox only"
    " (no edition, no outbox row).",
)
@click.option(
    "--as",
    "as_email",
    default=None,
    metavar="SUBSCRIBER",
    help="With --test-to: the reader whose digest to send (default: the first active one).",
)
@click.pass_context
@reports_errors
def send(
    ctx: click.Context,
    key: str | None,
    resume: bool,
    no_fetch: bool,
    plan_only: bool,
    retry_unknown: bool,
    now: bool,
    test_to: str | None,
    as_email: str | None,
) -> None:
    """Fetch the feed and send an edition through the configured SMTP server."""
    service = service_from(ctx)
    if test_to or as_email:
        _send_test(
            service,
            test_to=test_to,
            as_email=as_email,
            fetch=not no_fetch,
            conflicting=bool(key or resume or plan_only or retry_unknown or now),
        )
        return
    target, resume = _checked(
        service, key, resume=resume, plan_only=plan_only, retry_unknown=retry_unknown, now=now
    )
    shown = _Shown()
    stopped_by = _stop_on_sigterm()
    try:
        if resume:
            result = service.runner.resume(
                target,
                retry_unknown=retry_unknown,
                by=operator(),
                on_start=shown.resuming,
                on_planned=shown.planned,
                on_outcome=shown.outcome,
            )
            if result is None:
                console.print("Nothing to resume: every edition has ended.")
                return
        else:
            result = _start(service.runner, key, fetch=not no_fetch, send=not plan_only, shown=shown)
    except KeyboardInterrupt:
        shown.stop()
        _stopped(ctx, service, shown.started, signal_name=stopped_by[0] if stopped_by else "Ctrl-C")
    finally:
        shown.stop()
    report_result(service, result)


def _checked(
    service: Any, key: str | None, *, resume: bool, plan_only: bool, retry_unknown: bool, now: bool
) -> tuple[Edition | None, bool]:
    """The edition ``key`` names (None: none named) and whether to resume it (a paused one named is
    resumed); with ``now``, its deferred rows become due. A wrong combination is a usage error."""
    target = service.store.editions.find_edition(key) if key else None
    if resume and key and target is None:
        raise CliError(f"no edition {key!r} to resume", hint="'newsletter editions' lists them.")
    if target is not None and target.status is EditionStatus.PAUSED and not plan_only:
        resume = True  # the operator named a paused edition: theirs to resume
    if now:
        _retry_deferred_now(service, resume=resume, edition=target)
    if retry_unknown and not resume:
        raise click.UsageError("--retry-unknown goes with --resume")
    if plan_only and resume:
        raise click.UsageError("--plan-only starts a new edition; it does not go with --resume")
    return target, resume


def _start(runner: Any, key: str | None, *, fetch: bool, send: bool, shown: _Shown) -> Any:
    """Run a new edition (``key``, default manual-<UTC time>), its progress shown by ``shown``."""
    from newsletter.scheduling.schedules import schedule_for_key

    key = key or "manual-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    schedule = schedule_for_key(key)
    # A key of a schedule (daily-..., weekly-...) sends to that schedule's cadence only,
    # exactly as the scheduler would; any other key is a manual edition for everyone.
    cadences = [Cadence(schedule)] if schedule in (c.value for c in Cadence) else None
    shown.started.append(key)
    return runner.run(
        key=key,
        schedule=schedule,
        cadences=cadences,
        fetch=fetch,
        send=send,
        on_planned=shown.planned,
        on_outcome=shown.outcome,
    )


class _Shown:
    """The progress of one send: a bar on a terminal, else a plain line every PROGRESS_EVERY
    seconds; ``started`` names the editions begun, for the stop message."""

    def __init__(self) -> None:
        self.bar = _progress()
        self.task: list[Any] = []
        self.total = 0
        self.said = time.monotonic()
        self.done: set[int] = (
            set()
        )  # rows, not outcomes: a row deferred and tried again in the run counts once
        self.started: list[str] = []

    def planned(self, total: int) -> None:
        if total and sys.stdout.isatty():
            self.bar.start()
            self.task.append(self.bar.add_task("sending", total=total))
        self.total = total

    def outcome(self, o: Any) -> None:
        # Count what the database will record as done; a row handed back (stopped, paused) is not.
        if o.state is DeliveryState.PENDING:
            return
        self.done.add(o.delivery_id)
        if self.task:
            self.bar.update(self.task[0], completed=len(self.done))
            return
        # Without a terminal (cron, a log file): a plain line every PROGRESS_EVERY seconds.
        if time.monotonic() - self.said >= PROGRESS_EVERY:
            self.said = time.monotonic()
            console.print(f"sending: {len(self.done):,} of {self.total:,} done")

    def resuming(self, edition: Edition, requeued: int) -> None:
        self.started.append(edition.key)
        if requeued:
            console.print(
                f"{requeued} rows of edition {edition.key} whose outcome was unknown"
                " will be sent again (same Message-ID)."
            )
        counts = ", ".join(f"{n} {s}" for s, n in sorted(edition.counts.items())) or "no rows yet"
        console.print(f"Resuming edition {edition.key} (#{edition.id}, {edition.status.value}): {counts}")

    def stop(self) -> None:
        """Take the bar off the terminal (once)."""
        if self.task:
            self.bar.stop()
            self.task.clear()


PROGRESS_EVERY = 5.0  # seconds between progress lines when stdout is not a terminal


def operator() -> str:
    """Who acts from this shell, as the audit log names them (pause, resume)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown user"
    return f"{user} (command line)"


def _stop_on_sigterm() -> list[str]:
    """Make SIGTERM stop a send as Ctrl-C does (the list names the signal once one came)."""
    import signal

    came: list[str] = []

    def stop(_signum: int, _frame: Any) -> None:
        came.append("SIGTERM")
        raise KeyboardInterrupt("SIGTERM")  # the engine pauses the edition "stopped by SIGTERM"

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    return came


def _stopped(ctx: click.Context, service: Any, started: list[str], *, signal_name: str) -> None:
    """A send stopped by Ctrl-C or SIGTERM: what was done, how to go on, exit 130 or 143.

    The sender let the messages in flight finish and gave every row it had not tried back
    (pending), and the engine paused the edition: a deliberate stop stays stopped (the
    scheduler's upkeep resumes only what a crash left). A row whose result only reached the
    journal is settled by the resume.
    """
    edition = service.store.editions.find_edition(started[-1]) if started else None
    if edition is not None:
        counts = (
            ", ".join(
                f"{n} {s}" for s, n in sorted(service.store.editions.delivery_counts(edition.id).items())
            )
            or "no rows yet"
        )
        console.print(f"Stopped by {signal_name}: edition {edition.key} (#{edition.id}) has {counts}.")
        if edition.status is EditionStatus.PAUSED:
            console.print(f"It is paused ({edition.reason}); nothing sends it until you resume it.")
        console.print(f"Resume it with: newsletter send --resume (or: newsletter resume {edition.key})")
    else:
        console.print(f"Stopped by {signal_name} before an edition started; nothing was sent.")
    ctx.exit(143 if signal_name == "SIGTERM" else 130)


def _send_test(
    service: Any, *, test_to: str | None, as_email: str | None, fetch: bool, conflicting: bool
) -> None:
    from newsletter.editions.preview import send_test

    if not test_to:
        raise click.UsageError("--as goes with --test-to EMAIL")
    if conflicting:
        raise click.UsageError(
            "--test-to sends one test message; it does not go with"
            " --key, --resume, --plan-only, --retry-unknown or --now"
        )
    preview = send_test(service.runner, to_address=test_to, email=as_email, fetch=fetch)
    if preview.feed:
        console.print(f"Note: {preview.feed}", markup=False)
    console.print(
        f"Test digest for {preview.subscriber.email} ({len(preview.selection.reports)} reports)"
        f" sent to {test_to}: [Test] {preview.subject}"
    )
    if preview.held.reports:
        console.print(f"Not in it yet: {preview.held}", markup=False)
    console.print(
        "No edition, outbox row or ledger mark was written;"
        " its unsubscribe and preferences links are test links that change nothing."
    )


def _retry_deferred_now(service: Any, *, resume: bool, edition: Edition | None) -> None:
    """`send --resume --now`: the deferred rows of ``edition`` (default: the newest unfinished
    one) become due at once."""
    if not resume:
        raise click.UsageError("--now goes with --resume")
    unfinished = (
        [edition]
        if edition is not None
        else service.store.editions.list_editions(
            statuses=[EditionStatus.SENDING, EditionStatus.PAUSED], limit=1
        )
    )
    if unfinished:
        ids = [
            r.id
            for r in service.store.outbox.list_deliveries(unfinished[0].id)
            if r.state is DeliveryState.DEFERRED
        ]
        service.store.outbox.set_rows_state(
            ids, DeliveryState.PENDING, reply="retried at once by the operator (--now)"
        )
        console.print(f"{len(ids)} deferred rows of edition {unfinished[0].key} retried now.")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@click.command()
@click.option("--once", is_flag=True, help="Drain what is claimable now, then exit (default: keep polling).")
@click.option(
    "--poll",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between looks for work.",
)
@click.pass_context
@reports_errors
def worker(ctx: click.Context, once: bool, poll: float) -> None:
    """Only drain outboxes: help send editions that are already planned (run several, on several machines)."""
    from sqlalchemy.exc import DBAPIError  # here: importing SQLAlchemy costs ~1 s that --help need not pay

    service = service_from(ctx)
    if service.store.engine.dialect.name == "sqlite":
        # SQLite has no row locks to share an outbox between processes with the same
        # guarantees as one sender; a half-working fleet is worse than none.
        raise CliError(
            "workers need PostgreSQL: this database is SQLite",
            hint="Send with 'newsletter send' (or 'send --resume' after '--plan-only'),"
            " or set database.url to a PostgreSQL server.",
        )
    console.print(
        f"Worker started (database {service.settings.database.url.split('@')[-1]}); Ctrl-C or SIGTERM stops."
    )
    # systemctl stop and docker stop send SIGTERM: stop as gracefully as for Ctrl-C.
    stopped_by = _stop_on_sigterm()
    pause = poll
    try:
        while True:
            try:
                worked = _drain_claimable(service)
            except DBAPIError as exc:
                # A database restart or a network cut: say so in one line and try again; the
                # rows this worker held come back to it or to another when their lease runs out.
                pause = min(max(pause, poll) * 2, 30.0)
                console.print(
                    f"database unreachable ({str(exc.orig or exc).splitlines()[0][:160]});"
                    f" retrying in {pause:.0f} s"
                )
                time.sleep(pause)
                continue
            pause = poll
            if once and not worked:
                _report_unfinished(service)
                return
            if not worked:
                time.sleep(poll)
    except KeyboardInterrupt:
        # The sender let the messages in flight finish and gave back (pending) every row it had not tried.
        signal_name = stopped_by[0] if stopped_by else "Ctrl-C"
        console.print(
            f"Stopped by {signal_name}; the rows this worker had not tried"
            " are pending again for the other workers."
        )
        ctx.exit(143 if signal_name == "SIGTERM" else 130)


def _drain_claimable(service: Any) -> bool:
    # Rows and journals a sender killed on this machine left: recovered now, not after the lease.
    service.runner.recover_dead_senders()
    worked = False
    for edition_id in service.store.outbox.claimable_editions():
        edition = service.store.editions.get_edition(edition_id)
        if edition is None:
            continue
        result = service.runner.drain(edition)
        # Work is rows sent or settled, not an edition that looked claimable: rows whose lease ran
        # out can still be locked by a stopped holder's open transaction (claims skip them), and
        # counting such a pass as work kept `worker --once` spinning until that holder woke.
        worked = worked or bool(result.tally)
        console.print(
            f"edition {edition.key}: "
            f"{', '.join(f'{n} {s}' for s, n in sorted(result.tally.items())) or 'nothing to do'}"
        )
    return worked


def _report_unfinished(service: Any) -> None:
    """`worker --once` ends saying what it could not do; non-zero when an operator must act."""
    unfinished = service.store.editions.list_editions(
        statuses=[EditionStatus.SENDING, EditionStatus.PAUSED], limit=20
    )
    must_act = []
    for edition in unfinished:
        counts = edition.counts
        if counts.get("sending"):
            console.print(f"edition {edition.key}: {counts['sending']} rows are with other live senders")
        if counts.get("deferred"):
            due = service.store.outbox.next_due(edition.id)
            console.print(
                f"edition {edition.key}: {counts['deferred']} rows deferred until {when(due)} (retried then)"
            )
        if edition.status is EditionStatus.PAUSED:
            must_act.append(f"edition {edition.key} is paused: {edition.reason}")
    if must_act:
        raise CliError(
            "; ".join(must_act),
            hint="Fix the cause, then 'newsletter send --resume' (or start the workers again).",
        )
