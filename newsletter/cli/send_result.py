"""What `newsletter send` prints when an edition's run ends: the summary table, the reports
held back for the next edition, and an honest exit when our own side delivered nothing."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from newsletter.cli.common import console


def report_result(service: Any, result: Any) -> None:
    """The summary of one run (``EditionRunner.run`` or ``resume``): exit 1 with a hint if
    nothing was delivered because our side failed."""
    _print_result(result)
    _say_held_back(service, result)
    _exit_honestly(service, result)


def _print_result(result: Any) -> None:
    """The summary table: sent / failed / skipped, plus the states that need attention."""
    edition = result.edition
    counts = edition.counts
    table = Table(title=f"Edition {edition.key} (#{edition.id}): {edition.status.value}")
    table.add_column("outcome")
    table.add_column("subscribers", justify="right")
    table.add_column("meaning")
    table.add_row("sent", str(counts.get("sent", 0)), "accepted by the SMTP server")
    table.add_row(
        "failed", str(counts.get("failed", 0)), f"refused for good (see 'newsletter editions {edition.id}')"
    )
    table.add_row("skipped", str(counts.get("suppressed", 0)), "left or bounced during the send")
    for state, meaning in (
        ("deferred", "will be retried later"),
        ("unknown", "connection lost after the data"),
        ("pending", "not sent yet"),
        ("sending", "with another sender"),
    ):
        if counts.get(state):
            table.add_row(state, str(counts[state]), meaning)
    console.print(table)
    if result.message and result.message != "finished":
        console.print(result.message)


def _say_held_back(service: Any, result: Any) -> None:
    """Reports stored but still in the settle window when the edition was planned: the next one has them."""
    from newsletter.editions.preview import held_back

    held = held_back(service.runner, as_of=result.edition.as_of)
    if held.reports:
        console.print(f"Not in this edition: {held}", markup=False)


def _exit_honestly(service: Any, result: Any) -> None:
    """Nothing delivered because our side (connection, TLS, AUTH, HELO) failed: one line, a hint, exit 1."""
    from newsletter.cli.common import CliError
    from newsletter.delivery.judgement import Verdict, judge, sender_hint
    from newsletter.delivery.suppression import split_stage

    tally = result.tally or {}
    if tally.get("sent", 0) or not (
        tally.get("deferred", 0) or tally.get("pending", 0) or tally.get("failed", 0)
    ):
        return
    for code, reply, _n in service.store.outbox.failure_replies(result.edition.id) + [
        (None, result.edition.reason.partition("(")[2], 1)
    ]:
        stage, text = split_stage(reply.removeprefix("gave up after delivery.max_age: "))
        if stage and judge(code, text, stage=stage).verdict is Verdict.SENDER:
            smtp = service.settings.smtp
            raise CliError(
                (
                    f"nothing was delivered: {smtp.host}:{smtp.port} failed at {stage}: "
                    f"{code if code and code > 0 else ''} {text[:160]}"
                ).replace("  ", " "),
                hint=sender_hint(stage, code, text) + " Then 'newsletter send --resume --now'.",
            )
