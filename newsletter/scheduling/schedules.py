"""Schedules from config: validated cron expressions, edition keys and upcoming fire times.

A schedule is a name (``daily`` or ``weekly``), a standard five-field crontab
expression (minute hour day-of-month month day-of-week) and the time zone the
expression is read in. ``load_schedules`` builds them from ``Settings`` and raises
a one-line ``ConfigError`` for anything wrong, including a fire time that falls
into a daylight-saving gap (it would never fire that day) or overlap (it would
fire twice), because both silently break "one edition a day".

Day-of-week numbers follow crontab (0 or 7 = Sunday, 1 = Monday). APScheduler 3.x
counts 0 = Monday (its issue 286), so ``0 7 * * 1-5`` given to it verbatim would
send Tuesday to Saturday; ``crontab_trigger`` translates the field to names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.models import Cadence

SCHEDULE_CADENCES: dict[str, Cadence] = {"daily": Cadence.DAILY, "weekly": Cadence.WEEKLY}
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab order: 0 = Sunday
CRON_HINT = (
    "Use five fields 'minute hour day month weekday' (e.g. '0 7 * * 1-5' = 07:00 Monday to Friday);"
    " an empty value turns the schedule off."
)
DST_SCAN_YEARS = 5  # zone rules rarely change further ahead than this
_DOW_ITEM = re.compile(r"^(\*|[0-7a-z]{1,3}(?:-[0-7a-z]{1,3})?)(?:/(\d+))?$")


@dataclass(frozen=True)
class Schedule:
    """One enabled schedule: ``name`` also names its edition keys and its send lock."""

    name: str
    cron: str
    zone: ZoneInfo
    cadence: Cadence
    trigger: CronTrigger
    misfire_grace: int  # seconds a fire may be late and still send

    def key_for(self, slot: datetime) -> str:
        return edition_key(self.name, slot, self.zone)

    def next_fire_times(self, count: int, *, after: datetime) -> list[datetime]:
        return next_fire_times(self.trigger, count, after=after)


def edition_key(name: str, slot: datetime, zone: ZoneInfo) -> str:
    """``<schedule>-<slot in the zone, to the minute, with its offset>``,
    e.g. ``daily-2026-03-09T07:00-04:00``.

    The offset keeps the two 01:30s of a fall-back night apart, should anyone schedule there.
    """
    if slot.tzinfo is None:
        raise ValueError("edition_key needs an aware slot time")
    return f"{name}-{slot.astimezone(zone).isoformat(timespec='minutes')}"


def schedule_for_key(key: str) -> str:
    """The schedule an edition key belongs to: ``daily``/``weekly`` by prefix, else ``manual``."""
    for name in SCHEDULE_CADENCES:
        if key.startswith(name + "-"):
            return name
    return "manual"


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"schedule.timezone {name!r} is not a known time zone",
            hint="Use an IANA name such as America/New_York, Europe/Berlin or UTC.",
        ) from exc


def load_schedules(settings: Settings, *, now: datetime | None = None) -> list[Schedule]:
    """The enabled schedules (an empty expression turns one off), validated.

    ``now`` only sets where the daylight-saving scan starts (default: the real time).
    Raises ConfigError naming the key for a bad zone, grace, expression or DST clash.
    """
    config = settings.schedule
    zone = load_zone(config.timezone)
    if config.misfire_grace < 1:
        raise ConfigError(
            f"schedule.misfire_grace must be at least 1 second, got {config.misfire_grace}",
            hint="The default is 3600 (a fire up to an hour late still sends).",
        )
    found = []
    for name, cadence in SCHEDULE_CADENCES.items():
        expr = getattr(config, name).strip()
        if not expr:
            continue
        trigger = crontab_trigger(expr, zone, key=f"schedule.{name}")
        check_dst(trigger, expr, zone, key=f"schedule.{name}", now=now)
        found.append(Schedule(name, expr, zone, cadence, trigger, config.misfire_grace))
    return found


def crontab_trigger(expr: str, zone: ZoneInfo, *, key: str = "schedule") -> CronTrigger:
    """A CronTrigger for a standard crontab expression read in ``zone``; ConfigError if invalid."""
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"{key} {expr!r} must have 5 fields, got {len(fields)}", hint=CRON_HINT)
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=_day_names(dow), timezone=zone
        )
    except ValueError as exc:
        raise ConfigError(f"{key} {expr!r} is not a valid cron expression: {exc}", hint=CRON_HINT) from exc


def _day_names(field: str) -> str:
    """Crontab day-of-week field -> APScheduler day names (0/7 = Sunday)."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if not match:
            raise ValueError(f"day-of-week item {item!r} is not understood")
        span, step_text = match.group(1), match.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step in {item!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        else:
            ends = [_day_number(part) for part in span.split("-")]
            first, last = ends[0], ends[-1]
            if len(ends) == 2 and last == 0 and first > 0:
                last = 7  # '5-7' / '5-0': Friday to Sunday
            if last < first:
                raise ValueError(f"day-of-week range {item!r} runs backwards")
            if step_text and len(ends) == 1:
                last = 6  # '1/2' in crontab means from Monday every other day
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(DAY_NAMES[d] for d in sorted(days))


def _day_number(text: str) -> int:
    if text.isdigit():
        value = int(text)
        if value > 7:
            raise ValueError(f"day of week {value} is out of range (0-7, 0 and 7 = Sunday)")
        return value
    if text in DAY_NAMES:
        return DAY_NAMES.index(text)
    raise ValueError(f"day of week {text!r} is not a number 0-7 or a name sun..sat")


def next_fire_times(trigger: CronTrigger, count: int, *, after: datetime) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, in the trigger's zone."""
    times: list[datetime] = []
    previous: datetime | None = None
    now = after + timedelta(microseconds=1)
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    return times


@dataclass(frozen=True)
class Transition:
    """A change of UTC offset: wall-clock times in [start, end) do not exist (gap) or occur twice
    (overlap)."""

    at: datetime  # the UTC instant of the change
    start: datetime  # naive wall-clock bounds of the affected hour(s)
    end: datetime
    gap: bool


def transitions(zone: ZoneInfo, *, start: datetime, years: int = DST_SCAN_YEARS) -> list[Transition]:
    """Offset changes of ``zone`` from ``start`` on, found by a daily scan then bisection."""
    found: list[Transition] = []
    step = timedelta(days=1)
    t = start.astimezone(UTC)
    end = t + timedelta(days=366 * years)
    offset = _offset(zone, t)
    while t < end:
        nxt = t + step
        new = _offset(zone, nxt)
        if new != offset:
            lo, hi = t, nxt  # offset(lo) == old, offset(hi) == new
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if _offset(zone, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            at = hi.replace(microsecond=0)
            before, after = (at + offset).replace(tzinfo=None), (at + new).replace(tzinfo=None)
            found.append(Transition(at, min(before, after), max(before, after), gap=new > offset))
            offset = new
        t = nxt
    return found


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    value = moment.astimezone(zone).utcoffset()
    assert value is not None
    return value


def check_dst(
    trigger: CronTrigger, expr: str, zone: ZoneInfo, *, key: str = "schedule", now: datetime | None = None
) -> None:
    """ConfigError if the expression names a wall-clock time that a DST change skips or repeats.

    The cron fields are matched against each affected wall-clock interval on its
    date (read as if the zone had no DST), so '30 2 * * *' in America/New_York is
    refused while '30 2 * * 1-5' is accepted (US clocks change on Sundays).
    """
    wall = CronTrigger(
        minute=_field(trigger, "minute"),
        hour=_field(trigger, "hour"),
        day=_field(trigger, "day"),
        month=_field(trigger, "month"),
        day_of_week=_field(trigger, "day_of_week"),
        timezone=UTC,
    )
    for change in transitions(zone, start=now or datetime.now(UTC)):
        start = change.start.replace(tzinfo=UTC)
        hit = wall.get_next_fire_time(None, start)
        if hit is not None and hit < change.end.replace(tzinfo=UTC):
            local = hit.replace(tzinfo=None)
            if change.gap:
                why = (
                    f"does not exist on {local:%Y-%m-%d} in {zone.key} (clocks jump from"
                    f" {change.start:%H:%M} to {change.end:%H:%M}), so that day would get no edition"
                )
            else:
                why = (
                    f"happens twice on {local:%Y-%m-%d} in {zone.key} (clocks go back from"
                    f" {change.end:%H:%M} to {change.start:%H:%M}), so that day could get two editions"
                )
            raise ConfigError(
                f"{key} {expr!r} fires at {local:%H:%M}, which {why}",
                hint=f"Pick a time outside {change.start:%H:%M}-{change.end:%H:%M} (e.g. 0 7 * * 1-5),"
                " or set schedule.timezone to UTC.",
            )


def _field(trigger: CronTrigger, name: str) -> str:
    for f in trigger.fields:
        if f.name == name:
            return str(f)
    raise KeyError(name)
