"""`newsletter schedule`: each configured schedule and its next fire times in its zone."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from newsletter.cli.common import reports_errors, settings_from
from newsletter.scheduling.schedules import SCHEDULE_CADENCES, load_schedules


@click.command("schedule")
@click.option(
    "--count",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="How many upcoming fire times to show.",
)
@click.pass_context
@reports_errors
def schedule_command(ctx: click.Context, count: int) -> None:
    """Show each schedule (schedule.daily, schedule.weekly) and its next fire times.

    Times are in schedule.timezone; each line also shows the edition key that
    fire will use. Exits non-zero with the reason if a schedule is invalid.
    """
    now = datetime.now(UTC)
    settings = settings_from(ctx)
    schedules = {s.name: s for s in load_schedules(settings, now=now)}
    grace = settings.schedule.misfire_grace
    click.echo(
        f"Time zone {settings.schedule.timezone}; a fire more than {grace} s late is skipped"
        " (schedule.misfire_grace)."
    )
    for name in SCHEDULE_CADENCES:
        schedule = schedules.get(name)
        if schedule is None:
            click.echo(f"\n{name}: off (schedule.{name} is empty)")
            continue
        click.echo(f"\n{name}: '{schedule.cron}' -> {schedule.cadence.value} subscribers")
        for when in schedule.next_fire_times(count, after=now):
            local = when.astimezone(schedule.zone)
            click.echo(f"  {local:%a %Y-%m-%d %H:%M %Z}   {schedule.key_for(when)}")
