"""`newsletter bounces`: receive delivery reports (DSNs, complaints), replay a Maildir of them,
or report the judged failures at the receiving domains with most of them."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli.common import TOP_DOMAINS, by_domain, console, err_console, reports_errors, service_from


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback is exposed to the network.",
)
@click.option(
    "--port",
    default=2525,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="SMTP port for delivery status notifications.",
)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("subscribers/bounces"),
    show_default=True,
    help="Audit copy of everything received.",
)
@click.option(
    "--from-maildir",
    "from_maildir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Process bounces saved in this Maildir instead of listening; reports already judged count nothing.",
)
@click.option(
    "--report",
    "report_days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Print the judged failures at the ten receiving domains with most over the last N days"
    " (the rest counted), then exit.",
)
@click.pass_context
@reports_errors
def bounces(
    ctx: click.Context,
    listen: str,
    port: int,
    maildir: Path,
    from_maildir: Path | None,
    report_days: int | None,
) -> None:
    """Receive bounces (DSNs and complaints to the VERP address) and act on the authenticated ones."""
    import time

    from newsletter.delivery.bounces import BounceProcessor, BounceReceiver, process_maildir

    service = service_from(ctx)
    if report_days is not None:
        _report(service, report_days)
        return
    processor = BounceProcessor(
        service.store.outbox, service.store.subscribers, service.signer, service.runner.suppressor()
    )
    if from_maildir is not None:
        results = process_maildir(processor, from_maildir)
        for key, verdict in results:
            console.print(f"{key}: {verdict.action} ({verdict.reason})")
        suppressed = sum(1 for _, v in results if v.action == "suppressed")
        unmatched = sum(1 for _, v in results if v.action == "unmatched")
        repeats = sum(1 for _, v in results if v.action == "repeat")
        # Unmatched reports changed nobody: they could not prove which digest they are about.
        # Repeats were judged before (by an earlier run or the listener): the store remembers.
        console.print(
            f"{len(results)} messages, {suppressed} subscribers suppressed, "
            f"{unmatched} unmatched (kept in {from_maildir}, changed nobody), "
            f"{repeats} already judged (counted once)"
        )
        return
    if listen not in ("127.0.0.1", "::1", "localhost"):
        err_console.print(
            f"Note: listening on {listen}; only reports carrying a valid VERP token "
            "(or our random Message-ID for the address they name) act, each once."
        )
    with BounceReceiver(processor, maildir=maildir, host=listen, port=port) as receiver:
        console.print(
            f"Receiving bounces on {listen}:{receiver.port}; audit copies in {maildir}. Ctrl-C stops."
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("Stopped.")


def _report(service: object, days: int) -> None:
    """Judged failures per receiving domain: hard and soft count against readers, blocked is about us."""
    from datetime import timedelta

    store = service.store  # type: ignore[attr-defined]
    since = store.clock() - timedelta(days=days)
    rows = store.bounces.kinds_by_domain(since=since)
    if not rows:
        console.print(f"No judged failures in the last {days} days.")
        return
    console.print(
        f"Judged failures per receiving domain, last {days} days "
        "(blocked = a policy refusal of us; it suppresses nobody):"
    )
    for line in by_domain(rows, top=TOP_DOMAINS):
        console.print(line)
