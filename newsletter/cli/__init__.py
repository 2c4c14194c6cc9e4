"""The operator CLI: `newsletter ...` and `python -m newsletter ...`.

The only place (with the web app and the scheduler) that talks to humans:
errors from the core become "Error: ..." plus a hint and a non-zero exit
(see ``newsletter.cli.common.CliError``). Each area's commands live in their
own module; this one assembles the group.
"""

from __future__ import annotations

import logging

import click

from newsletter.cli.admin import admin
from newsletter.cli.bounces import bounces
from newsletter.cli.database import db
from newsletter.cli.demo import demo
from newsletter.cli.dkim import dkim_group, dns_group
from newsletter.cli.preview import preview
from newsletter.cli.schedule import schedule_command
from newsletter.cli.sending import editions, send, worker
from newsletter.cli.serve import serve_command
from newsletter.cli.settings import show_config
from newsletter.cli.subscribers import subscribers
from newsletter.sink.cli import sink_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (else $NEWSLETTER_CONFIG, else ./newsletter.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the service does.")
@click.version_option(package_name="newsletter")
def main(config_path: str | None, verbose: bool) -> None:
    """Video Surveillance News: email digests of the newest industry reports.

    Start with 'newsletter demo' to see a digest delivered to a local sink.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for command in (send, preview, demo, worker, editions, subscribers, bounces, db, show_config):
    main.add_command(command)
main.add_command(schedule_command, "schedule")
main.add_command(serve_command, "serve")
main.add_command(sink_command, "sink")
main.add_command(admin, "admin")
main.add_command(dkim_group, "dkim")
main.add_command(dns_group, "dns")
