"""`newsletter schedule`: each configured schedule and its next fire times in its zone."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from newsletter.config import load_settings
from newsletter.errors import NewsletterError
from newsletter.schedules import SCHEDULE_CADENCES, load_schedules


@click.command("schedule")
@click.option("--count", default=5, show_default=True, type=click.IntRange(1, 100), help="How many upcoming fire times to show.")
@click.pass_context
def schedule_command(ctx: click.Context, count: int) -> None:
    """Show each schedule (schedule.daily, schedule.weekly) and its next fire times.

    Times are in schedule.timezone; each line also shows the edition key that
    fire will use. Exits non-zero with the reason if a schedule is invalid.
    """
    root = ctx.find_root()
    now = datetime.now(timezone.utc)
    try:
        settings = load_settings(root.params.get("config_path"))
        schedules = {s.name: s for s in load_schedules(settings, now=now)}
    except NewsletterError as exc:
        from newsletter.cli import CliError  # the CLI's one way of showing errors

        raise CliError(exc) from exc
    grace = settings.schedule.misfire_grace
    click.echo(f"Time zone {settings.schedule.timezone}; a fire more than {grace} s late is skipped (schedule.misfire_grace).")
    for name in SCHEDULE_CADENCES:
        schedule = schedules.get(name)
        if schedule is None:
            click.echo(f"\n{name}: off (schedule.{name} is empty)")
            continue
        click.echo(f"\n{name}: '{schedule.cron}' -> {schedule.cadence.value} subscribers")
        for when in schedule.next_fire_times(count, after=now):
            local = when.astimezone(schedule.zone)
            click.echo(f"  {local:%a %Y-%m-%d %H:%M %Z}   {schedule.key_for(when)}")
