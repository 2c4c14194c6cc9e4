"""Scheduled editions end to end: the schedules' triggers, a fake clock, a real SMTP sink.

Time moves only through FakeClock. ``walk`` wakes the jobs as APScheduler would (each
schedule at its next run, at once if that has passed, then at each next fire time of its
trigger) and calls ``ScheduledEditions.run``, so nothing sleeps and every fire goes through
the send lock and EditionRunner.run. tests/scheduler/test_real_scheduler.py runs the real
APScheduler.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta
from email import policy
from email.parser import BytesParser
from zoneinfo import ZoneInfo

import pytest

from newsletter.models import Cadence, EditionStatus
from newsletter.scheduling.scheduler import FireResult, ScheduledEditions, fire, latest_slot
from newsletter.scheduling.schedules import load_schedules
from newsletter.service import Service
from tests.factories import FakeClock, Item, write_rss

from .conftest import World

NY = ZoneInfo("America/New_York")
EVERY_DAY = {"NEWSLETTER_SCHEDULE_DAILY": "0 7 * * *", "NEWSLETTER_SCHEDULE_WEEKLY": ""}
READERS = ["ana@example.org", "ben@example.org"]
WAKE = timedelta(seconds=2)  # the scheduler's thread wakes a moment after the slot


def at(day: date, hour: int, minute: int = 0, zone: ZoneInfo = NY) -> datetime:
    return datetime.combine(day, time(hour, minute), zone)


def key(day: date, zone: ZoneInfo = NY, name: str = "daily") -> str:
    return f"{name}-{at(day, 7, zone=zone).isoformat(timespec='minutes')}"


def daily_feed(world: World, days: list[date], zone: ZoneInfo = NY) -> None:
    """One report per day, published 05:00 local: two hours before the 07:00 slot."""
    write_rss(world.feed, [Item(f"Report of {d}", f"r{d}", at(d, 5, zone=zone)) for d in days])


def jobs_of(service: Service) -> ScheduledEditions:
    assert service.clock is not None
    return ScheduledEditions(service, load_schedules(service.settings, now=service.clock()))


def wakes(jobs: ScheduledEditions, start: datetime, until: datetime) -> list[tuple[datetime, str]]:
    """When APScheduler would wake each schedule's job from ``start`` until ``until``: at its
    next run (at once if that has passed: coalesced into one run), then after each run at the
    trigger's next fire time after the latest slot."""
    due = {s.name: (s.trigger, jobs.next_run(s)) for s in jobs.schedules}
    out: list[tuple[datetime, str]] = []
    now = start
    while True:
        pending = [(when, name) for name, (_, when) in due.items() if when is not None]
        if not pending:
            return out
        when, name = min(pending)
        now = max(when, now) + WAKE
        if now >= until:
            return out
        out.append((now, name))
        trigger = due[name][0]
        due[name] = (trigger, trigger.get_next_fire_time(latest_slot(trigger, now), now))


def walk(jobs: ScheduledEditions, clock: FakeClock, until: datetime) -> list[FireResult]:
    """Move the clock to each wake until ``until`` and fire there, as the scheduler's thread would."""
    results = []
    for when, name in wakes(jobs, clock(), until):
        clock.set(when)
        results.append(jobs.run(name))
    clock.set(until)
    return results


def readers(
    world: World, service: Service, emails: list[str] = READERS, cadence: Cadence = Cadence.DAILY
) -> None:
    for email in emails:
        world.subscribe(service, email, cadence)


def bodies_for(world: World, edition_key: str) -> list[str]:
    out = []
    for message in world.sink.messages():
        parsed = BytesParser(policy=policy.default).parsebytes(message.raw)
        if parsed["X-Newsletter-Edition"] == edition_key:
            out.append(parsed.get_body(("plain",)).get_content())
    return out


DST_WEEKS = [
    ("America/New_York", date(2026, 3, 8)),  # spring forward: 02:00 -> 03:00
    ("America/New_York", date(2026, 11, 1)),  # fall back: 02:00 -> 01:00
    ("Europe/Berlin", date(2026, 3, 29)),
    ("Europe/Berlin", date(2026, 10, 25)),
]


@pytest.mark.parametrize(("zone_name", "change_day"), DST_WEEKS, ids=[f"{z}-{d}" for z, d in DST_WEEKS])
def test_dst_week_gives_one_edition_a_day_at_seven_local(
    world: World, zone_name: str, change_day: date
) -> None:
    zone = ZoneInfo(zone_name)
    days = [change_day + timedelta(days=i - 3) for i in range(7)]
    daily_feed(world, days, zone)
    clock = FakeClock(at(days[0], 0, zone=zone))
    service = world.service(clock=clock, **EVERY_DAY, NEWSLETTER_SCHEDULE_TIMEZONE=zone_name)
    readers(world, service)

    results = walk(jobs_of(service), clock, until=clock() + timedelta(days=7))
    expected = [key(d, zone) for d in days]
    editions = world.editions(service)
    assert [e.key for e in editions] == expected
    assert [r.outcome for r in results] == ["sent"] * 7
    assert all(e.status is EditionStatus.SENT for e in editions)
    # The slot is 07:00 wall-clock every day, whichever offset applies that day.
    assert [e.as_of.astimezone(zone).time() for e in editions] == [time(7)] * 7
    assert len({e.as_of.utcoffset() for e in editions}) == 1  # as_of is stored in UTC
    assert len({e.as_of.astimezone(zone).utcoffset() for e in editions}) == 2  # the week spans the change
    world.sink.wait_for(count=14, timeout=10)
    assert world.received() == sorted((r, k) for r in READERS for k in expected)


@pytest.mark.parametrize("restart_hour", [7, 12], ids=["restart-within-grace", "restart-after-grace"])
def test_three_days_down_gives_exactly_one_catch_up(
    world: World, database_url: str, restart_hour: int
) -> None:
    monday = date(2026, 3, 2)
    days = [monday + timedelta(days=i) for i in range(5)]
    daily_feed(world, days)
    clock = FakeClock(at(monday, 6))
    first = world.service(clock=clock, **EVERY_DAY, NEWSLETTER_DATABASE_URL=database_url)
    readers(world, first)
    walk(jobs_of(first), clock, until=at(monday, 8))
    first.close()
    # Down from Monday 08:00 until Thursday: the Tuesday, Wednesday and Thursday slots pass unseen.
    clock.set(at(days[3], restart_hour, 20))
    second = world.service(clock=clock, **EVERY_DAY, NEWSLETTER_DATABASE_URL=database_url)  # a new process
    results = walk(jobs_of(second), clock, until=at(days[4], 8))
    editions = world.editions(second)
    if restart_hour == 7:
        # One catch-up for Thursday carries Tuesday's to Thursday's reports; Friday is normal.
        assert [(e.key, e.status) for e in editions] == [
            (key(monday), EditionStatus.SENT),
            (key(days[3]), EditionStatus.SENT),
            (key(days[4]), EditionStatus.SENT),
        ]
        catch_up = bodies_for(world, key(days[3]))
        assert len(catch_up) == 2
        assert all(f"Report of {d}" in body for body in catch_up for d in days[1:4])
    else:
        # The one coalesced run is hours late: recorded, not sent; Friday carries everything.
        assert [(e.key, e.status) for e in editions] == [
            (key(monday), EditionStatus.SENT),
            (key(days[3]), EditionStatus.SKIPPED),
            (key(days[4]), EditionStatus.SENT),
        ]
        assert editions[1].reason.startswith("too late")
        friday = bodies_for(world, key(days[4]))
        assert all(f"Report of {d}" in body for body in friday for d in days[1:5])
    assert [r.key for r in results] == [key(days[3]), key(days[4])]
    world.sink.wait_for(count=2 * 3 if restart_hour == 7 else 2 * 2, timeout=10)
    assert len(world.sink.messages()) == (6 if restart_hour == 7 else 4)


def test_two_schedulers_on_one_database_make_one_edition_per_slot(world: World, database_url: str) -> None:
    """Two "processes" (threads, each with its own event loop and Service) wake together at every step."""
    monday = date(2026, 3, 2)
    days = [monday + timedelta(days=i) for i in range(3)]
    daily_feed(world, days)
    clock = FakeClock(at(monday, 0))
    services = [
        world.service(clock=clock, **EVERY_DAY, NEWSLETTER_DATABASE_URL=database_url) for _ in range(2)
    ]
    readers(world, services[0])
    services[1].store  # schema created up front: two first-time CREATE TABLEs would race
    plan = wakes(jobs_of(services[0]), clock(), until=at(days[-1], 12))
    assert len(plan) == 3
    moments = iter(plan)
    together = threading.Barrier(2, action=lambda: clock.set(next(moments)[0]), timeout=60)
    results: list[FireResult] = []
    errors: list[BaseException] = []

    def process(service: Service) -> None:
        jobs = jobs_of(service)
        try:
            for _, name in plan:
                together.wait()
                results.append(jobs.run(name))
        except BaseException as exc:  # surfaced below, not lost in the thread
            together.abort()
            errors.append(exc)

    threads = [threading.Thread(target=process, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert [e.key for e in world.editions(services[0])] == [key(d) for d in days]
    assert all(e.status is EditionStatus.SENT for e in world.editions(services[1]))
    # Whichever process fired, exactly one sent each slot; any other fire found it busy or done.
    for d in days:
        outcomes = [r.outcome for r in results if r.key == key(d)]
        assert outcomes.count("sent") == 1, outcomes
        assert set(outcomes) <= {"sent", "busy", "done"}, outcomes
    world.sink.wait_for(count=6, timeout=10)
    assert world.received() == sorted((r, key(d)) for r in READERS for d in days)


def test_two_processes_firing_one_slot_at_once_send_it_once(world: World, database_url: str) -> None:
    """The race the job store cannot rule out: both processes picked the slot up; the key and lock decide."""
    monday = date(2026, 3, 2)
    daily_feed(world, [monday])
    services = [world.service(**EVERY_DAY, NEWSLETTER_DATABASE_URL=database_url) for _ in range(2)]
    readers(world, services[0])
    services[1].store
    slot = at(monday, 7)
    together = threading.Barrier(2, timeout=60)
    results: list[FireResult] = []
    errors: list[BaseException] = []

    def one(service: Service) -> None:
        together.wait()
        try:
            results.append(fire(service, "daily", slot, now=slot + timedelta(seconds=3)))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 2
    assert [r.outcome for r in results].count("sent") == 1
    assert {r.outcome for r in results} <= {"sent", "busy", "done"}
    [edition] = world.editions(services[0])
    assert edition.key == key(monday) and edition.status is EditionStatus.SENT
    world.sink.wait_for(count=2, timeout=10)
    assert world.received() == sorted((r, key(monday)) for r in READERS)


def test_a_late_wake_is_skipped_and_nothing_is_lost(world: World) -> None:
    monday = date(2026, 3, 2)
    daily_feed(world, [monday, monday + timedelta(days=1)])
    clock = FakeClock(at(monday, 6))
    service = world.service(clock=clock, **EVERY_DAY)
    readers(world, service)
    jobs = jobs_of(service)

    clock.set(at(monday, 8, 30))  # the process was stalled (suspend, overload) past the 1 h grace
    late = [jobs.run("daily")]
    walk(jobs, clock, until=at(monday + timedelta(days=1), 8))
    assert [(r.key, r.outcome) for r in late] == [(key(monday), "skipped")]
    assert late[0].message.startswith("skipped: too late")
    monday_edition, tuesday_edition = world.editions(service)
    assert monday_edition.status is EditionStatus.SKIPPED
    assert monday_edition.reason.startswith("too late: woke 1h30m00s after the slot")
    assert monday_edition.counts == {}
    assert tuesday_edition.status is EditionStatus.SENT
    world.sink.wait_for(count=2, timeout=10)
    assert len(world.sink.messages()) == 2
    assert all(f"Report of {monday}" in body for body in bodies_for(world, key(monday + timedelta(days=1))))


def test_a_late_wake_edition_is_never_planned_so_upkeep_cannot_send_it(world: World) -> None:
    """Regression: the late fire created the edition "planned" and marked it skipped a moment
    later; the scheduler's upkeep, resuming unfinished editions in another thread, could take
    it up in between and send it (seen in CI: the skipped slot ended "sent")."""
    monday = date(2026, 3, 2)
    daily_feed(world, [monday])
    service = world.service(**EVERY_DAY)
    readers(world, service)
    with service.store.engine.begin() as conn:  # the database records every status the edition ever has
        conn.exec_driver_sql("CREATE TABLE statuses_seen (key TEXT, status TEXT)")
        conn.exec_driver_sql(
            "CREATE TRIGGER born AFTER INSERT ON editions BEGIN INSERT INTO statuses_seen"
            " VALUES (NEW.key, NEW.status); END"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER moved AFTER UPDATE OF status ON editions BEGIN INSERT INTO statuses_seen"
            " VALUES (NEW.key, NEW.status); END"
        )
    slot = at(monday, 7)

    result = fire(service, "daily", slot, now=at(monday, 8, 30))
    resumed = service.runner.upkeep()

    assert result.outcome == "skipped"
    assert resumed == []
    with service.store.engine.connect() as conn:
        seen = (
            conn.exec_driver_sql("SELECT status FROM statuses_seen WHERE key = ?", (key(monday),))
            .scalars()
            .all()
        )
    assert seen == ["skipped"]
    [edition] = world.editions(service)
    assert edition.status is EditionStatus.SKIPPED and edition.finished_at is not None
    assert edition.reason.startswith("too late: woke 1h30m00s after the slot")
    assert world.sink.messages() == []


def test_a_quiet_day_is_skipped_without_sending(world: World) -> None:
    monday = date(2026, 3, 2)
    daily_feed(world, [monday])  # nothing is published on Tuesday
    clock = FakeClock(at(monday, 6))
    service = world.service(clock=clock, **EVERY_DAY)
    readers(world, service)

    results = walk(jobs_of(service), clock, until=at(monday + timedelta(days=1), 8))
    assert [r.outcome for r in results] == ["sent", "skipped"]
    sent, quiet = world.editions(service)
    assert quiet.key == key(monday + timedelta(days=1))
    assert quiet.status is EditionStatus.SKIPPED
    assert "no new reports" in quiet.reason
    assert quiet.counts == {}
    world.sink.wait_for(count=2, timeout=10)
    assert {k for _, k in world.received()} == {sent.key}


def test_a_feed_outage_fails_the_edition_and_the_next_fire_retries(world: World) -> None:
    monday = date(2026, 3, 2)
    clock = FakeClock(at(monday, 6))
    service = world.service(clock=clock, **EVERY_DAY, NEWSLETTER_REPORTS_FEED=str(world.tmp / "gone.xml"))
    readers(world, service)
    jobs = jobs_of(service)

    results = walk(jobs, clock, until=at(monday, 8))
    daily_feed(world, [monday])
    (world.tmp / "gone.xml").write_bytes(world.feed.read_bytes())  # the feed is back
    results += walk(jobs, clock, until=at(monday + timedelta(days=1), 8))
    assert [r.outcome for r in results] == ["failed", "sent"]
    down, back = world.editions(service)
    assert down.status is EditionStatus.FAILED
    assert "gone.xml" in down.reason and "could not be read" in down.reason
    assert down.counts == {}
    assert back.status is EditionStatus.SENT
    world.sink.wait_for(count=2, timeout=10)
    assert {k for _, k in world.received()} == {back.key}


def test_default_schedules_send_each_cadence_its_own_edition(world: World) -> None:
    """Defaults: daily 07:00 Monday to Friday, weekly 07:00 Monday (crontab weekday numbers)."""
    saturday = date(2026, 3, 7)
    days = [saturday + timedelta(days=i) for i in range(8)]
    daily_feed(world, days)
    clock = FakeClock(at(saturday, 0))
    service = world.service(clock=clock)
    world.subscribe(service, "daily@example.org", Cadence.DAILY)
    world.subscribe(service, "weekly@example.org", Cadence.WEEKLY)

    walk(jobs_of(service), clock, until=at(days[-1], 0))
    weekdays = [d for d in days if d.weekday() < 5]
    assert [d.strftime("%a") for d in weekdays] == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    monday = weekdays[0]
    assert sorted(e.key for e in world.editions(service)) == sorted(
        [key(d) for d in weekdays] + [key(monday, name="weekly")]
    )
    world.sink.wait_for(count=6, timeout=10)
    assert world.received() == sorted(
        [("daily@example.org", key(d)) for d in weekdays]
        + [("weekly@example.org", key(monday, name="weekly"))]
    )
