"""`newsletter demo`: the whole pipeline on one machine, in one process.

Starts the local sink on a free loopback port, loads the sample feed and the
sample subscribers into a fresh demo database, sends one edition, and says
where to look. Nothing outside the demo folder is touched.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from newsletter.cli.common import console as cli_console
from newsletter.cli.common import reports_errors, settings_from
from newsletter.config import SAMPLE_FEED, SAMPLE_SUBSCRIBERS, Settings
from newsletter.content.render import web_version
from newsletter.errors import NewsletterError
from newsletter.service import Service
from newsletter.sink.server import SinkServer
from newsletter.subscriptions import import_file


def run_demo(settings: Settings, *, maildir: Path, console: Console) -> None:
    """Run the demo; raises NewsletterError with a hint if a step fails."""
    out = maildir.parent  # the demo's database, journal and preview sit beside its Maildir
    out.mkdir(parents=True, exist_ok=True)
    database = out / "demo.db"
    for stale in (database, out / "demo.db-wal", out / "demo.db-shm"):
        stale.unlink(missing_ok=True)
    if maildir.exists():
        shutil.rmtree(maildir)
    journal = out / "journal"
    shutil.rmtree(journal, ignore_errors=True)

    with SinkServer(maildir=maildir, smtp_port=0) as sink:
        demo_settings = replace(
            settings,
            site=replace(settings.site, secret_key=settings.site.secret_key or secrets.token_urlsafe(32)),
            database=replace(settings.database, url=f"sqlite:///{database.resolve()}"),
            reports=replace(settings.reports, feed=str(SAMPLE_FEED), settle=0),
            smtp=replace(
                settings.smtp,
                host="127.0.0.1",
                port=sink.smtp_port,
                security="none",
                username="",
                password="",
            ),
            delivery=replace(settings.delivery, journal_dir=str(journal.resolve())),
        )
        service = Service(demo_settings)
        try:
            console.print(f"Local sink listening on 127.0.0.1:{sink.smtp_port}, storing mail in {maildir}")
            imported = import_file(service.store, SAMPLE_SUBSCRIBERS)
            console.print(f"Subscribers: {imported.added} imported from {SAMPLE_SUBSCRIBERS.name}")
            result = service.runner.run(key="demo")
            console.print(f"Reports: {service.store.reports.count_reports()} loaded from the sample feed")
            expected = result.edition.counts.get("sent", 0)
            try:
                received = sink.wait_for(count=expected, timeout=30) if expected else []
            except TimeoutError:
                received = sink.messages()
            first = service.store.editions.list_variants(result.edition.id)
            preview_path = out / "preview.html"
            if first:
                # The archive copy of the first variant: what "view in browser" shows.
                preview_path.write_text(
                    web_version(first[0].html, manage_url=demo_settings.site.base_url + "/manage"),
                    encoding="utf-8",
                )
        finally:
            service.close()
    table = Table(title=f"Edition {result.edition.key}: {result.edition.status.value}")
    for col in ("to", "subject", "size"):
        table.add_column(col)
    for message in sorted(received, key=lambda m: m.rcpt_tos[0]):
        table.add_row(", ".join(message.rcpt_tos), message.subject, f"{len(message.raw):,} B")
    console.print(table)
    if len(received) != expected:
        raise NewsletterError(
            f"the sink received {len(received)} of {expected} messages",
            hint="Run with -v to see the sender's log.",
        )
    console.print(f"Delivered {len(received)} digests. Look at them:")
    console.print(f"  Maildir (any mail client):  {maildir}/new")
    console.print(f"  Archive copy of a digest:   {preview_path}")
    console.print(
        "  Browse mail in a viewer:    newsletter sink --maildir " + str(maildir) + " --http-port 8025"
    )


@click.command()
@click.option(
    "--maildir",
    type=click.Path(file_okay=False),
    default="demo-output/maildir",
    show_default=True,
    help="Where the sink stores the delivered mail.",
)
@click.pass_context
@reports_errors
def demo(ctx: click.Context, maildir: str) -> None:
    """Deliver a digest of the sample feed to the sample subscribers, through a local sink."""
    settings = settings_from(ctx)
    run_demo(settings, maildir=Path(maildir), console=cli_console)
