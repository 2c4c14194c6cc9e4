"""The operator CLI: `newsletter ...` and `python -m newsletter ...`.

The only place (with the web app and the scheduler) that talks to humans:
errors from the core become "Error: ..." plus a hint and a non-zero exit
(see ``newsletter.cli.common.CliError``). Each area's commands live in their
own module; this one assembles the group.
"""

from __future__ import annotations

import logging

import click

from newsletter.cli.lazy import LazyCommand, LazyGroup

# Each command's module is imported when that command runs (see `newsletter.cli.lazy`).


def _admin() -> click.Command:
    from newsletter.cli.admin import admin

    return admin


def _bounces() -> click.Command:
    from newsletter.cli.bounces import bounces

    return bounces


def _config() -> click.Command:
    from newsletter.cli.settings import show_config

    return show_config


def _db() -> click.Command:
    from newsletter.cli.database import db

    return db


def _demo() -> click.Command:
    from newsletter.cli.demo import demo

    return demo


def _dkim() -> click.Command:
    from newsletter.cli.dkim import dkim_group

    return dkim_group


def _dns() -> click.Command:
    from newsletter.cli.dkim import dns_group

    return dns_group


def _editions() -> click.Command:
    from newsletter.cli.editions import editions

    return editions


def _pause() -> click.Command:
    from newsletter.cli.editions import pause

    return pause


def _resume() -> click.Command:
    from newsletter.cli.editions import resume

    return resume


def _preview() -> click.Command:
    from newsletter.cli.preview import preview

    return preview


def _schedule() -> click.Command:
    from newsletter.cli.schedule import schedule_command

    return schedule_command


def _send() -> click.Command:
    from newsletter.cli.sending import send

    return send


def _serve() -> click.Command:
    from newsletter.cli.serve import serve_command

    return serve_command


def _sink() -> click.Command:
    from newsletter.sink.cli import sink_command

    return sink_command


def _subscribers() -> click.Command:
    from newsletter.cli.subscribers import subscribers

    return subscribers


def _worker() -> click.Command:
    from newsletter.cli.sending import worker

    return worker


COMMANDS = {
    "admin": LazyCommand(_admin, "Operator console accounts: create users, set passwords, list them."),
    "bounces": LazyCommand(
        _bounces,
        "Receive bounces (DSNs and complaints to the VERP address) and act on the authenticated ones.",
    ),
    "config": LazyCommand(_config, "Check the configuration and show every key with its effective value."),
    "db": LazyCommand(_db, "Schema versions (Alembic migrations)."),
    "demo": LazyCommand(
        _demo, "Deliver a digest of the sample feed to the sample subscribers, through a local sink."
    ),
    "dkim": LazyCommand(_dkim, "DKIM keys: the service signs every mail it sends with them."),
    "dns": LazyCommand(_dns, "The DNS records receivers check: SPF, DKIM, DMARC, MX."),
    "editions": LazyCommand(
        _editions, "List editions, or show one with its counts and most common failure replies."
    ),
    "pause": LazyCommand(
        _pause, "Pause an edition (default: the newest one sending): every sender stops at its next batch."
    ),
    "preview": LazyCommand(_preview, "Render a digest without sending; list which reports are in and why."),
    "resume": LazyCommand(
        _resume,
        "Resume a paused or unfinished edition (default: the newest one); the same as 'send --resume'.",
    ),
    "schedule": LazyCommand(
        _schedule, "Show each schedule (schedule.daily, schedule.weekly) and its next fire times."
    ),
    "send": LazyCommand(_send, "Fetch the feed and send an edition through the configured SMTP server."),
    "serve": LazyCommand(
        _serve, "Serve the subscriber web app: signup, confirm, unsubscribe, preferences, archive."
    ),
    "sink": LazyCommand(
        _sink, "Run the local SMTP sink: store every message in a Maildir, check it, show it."
    ),
    "subscribers": LazyCommand(_subscribers, "Add, edit, remove, list, import and export subscribers."),
    "worker": LazyCommand(
        _worker,
        "Only drain outboxes: help send editions that are already planned"
        " (run several, on several machines).",
    ),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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
