"""`newsletter bounces`: receive delivery status notifications and suppress failed addresses."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli.common import console, err_console, reports_errors, service_from


@click.command()
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback is exposed to the network.")
@click.option("--port", default=2525, show_default=True, type=click.IntRange(0, 65535), help="SMTP port for delivery status notifications.")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), default=Path("subscribers/bounces"), show_default=True, help="Audit copy of everything received.")
@click.option("--from-maildir", "from_maildir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="Process bounces saved in this Maildir instead of listening.")
@click.pass_context
@reports_errors
def bounces(ctx: click.Context, listen: str, port: int, maildir: Path, from_maildir: Path | None) -> None:
    """Receive bounces (RFC 3464 DSNs to the VERP address) and suppress failed addresses."""
    import time

    from newsletter.delivery.bounces import BounceProcessor, BounceReceiver, process_maildir

    service = service_from(ctx)
    processor = BounceProcessor(service.store.outbox, service.store.subscribers, service.signer, service.runner.suppressor())
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
