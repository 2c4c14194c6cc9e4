"""Schedule validation, the `newsletter schedule` command, and the database-held send lock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.editions.lock import SendLock, SendLockBusy, hold_send_lock, lock_name
from newsletter.errors import ConfigError
from newsletter.models import Cadence
from newsletter.scheduling.scheduler import ScheduledEditions, start_scheduler
from newsletter.scheduling.schedules import edition_key, load_schedules, load_zone, schedule_for_key
from newsletter.service import Service
from newsletter.storage.store import Store
from tests.factories import FakeClock, settings_from_env

from .conftest import World

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # DST scans start here: 2026-2031
ZONE = ZoneInfo("America/New_York")


@pytest.fixture
def schedules(tmp_path: Path) -> Callable[..., dict[str, object]]:
    """schedules(daily=..., timezone=...) -> the schedules of Settings with just those keys set."""

    def load(**env: str) -> dict[str, object]:
        settings = settings_from_env(
            tmp_path, {f"NEWSLETTER_SCHEDULE_{k.upper()}": v for k, v in env.items()}
        )
        return {s.name: s for s in load_schedules(settings, now=NOW)}

    return load


def test_defaults_are_weekdays_and_mondays_at_seven_new_york(
    schedules: Callable[..., dict[str, object]],
) -> None:
    found = schedules()
    daily, weekly = found["daily"], found["weekly"]
    assert daily.cadence is Cadence.DAILY and weekly.cadence is Cadence.WEEKLY  # type: ignore[attr-defined]
    days = [t.strftime("%a %H:%M %Z") for t in daily.next_fire_times(7, after=NOW)]  # type: ignore[attr-defined]
    assert days == [
        "Tue 07:00 EST",
        "Wed 07:00 EST",
        "Thu 07:00 EST",
        "Fri 07:00 EST",
        "Mon 07:00 EST",
        "Tue 07:00 EST",
        "Wed 07:00 EST",
    ]
    assert [t.strftime("%a %Y-%m-%d") for t in weekly.next_fire_times(2, after=NOW)] == [
        "Mon 2026-01-12",
        "Mon 2026-01-19",
    ]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("expr", "days"),
    [
        ("0 7 * * 0", "Sun"),
        ("0 7 * * 7", "Sun"),
        ("0 7 * * 6,0", "Sat Sun"),
        ("0 7 * * mon-wed", "Mon Tue Wed"),
        ("0 7 * * */3", "Sun Wed Sat"),
        ("0 7 * * 5-7", "Fri Sat Sun"),
    ],
)
def test_weekday_numbers_follow_crontab_not_apscheduler(
    schedules: Callable[..., dict[str, object]], expr: str, days: str
) -> None:
    daily = schedules(daily=expr, timezone="UTC")["daily"]
    fired = {t.strftime("%a") for t in daily.next_fire_times(14, after=NOW)}  # type: ignore[attr-defined]
    assert fired == set(days.split())


def test_an_empty_expression_turns_a_schedule_off(schedules: Callable[..., dict[str, object]]) -> None:
    assert list(schedules(weekly="")) == ["daily"]
    assert schedules(daily="", weekly="") == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"daily": "0 7 * *"}, "schedule.daily '0 7 * *' must have 5 fields, got 4"),
        ({"weekly": "0 25 * * 1"}, "schedule.weekly '0 25 * * 1' is not a valid cron expression"),
        ({"daily": "0 7 * * 9"}, "schedule.daily '0 7 * * 9' is not a valid cron expression"),
        ({"timezone": "Mars/Olympus"}, "schedule.timezone 'Mars/Olympus' is not a known time zone"),
        ({"misfire_grace": "0"}, "schedule.misfire_grace must be at least 1 second"),
    ],
)
def test_bad_schedules_are_one_line_errors_with_a_hint(
    schedules: Callable[..., dict[str, object]], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        schedules(**env)
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message and caught.value.hint


@pytest.mark.parametrize(
    ("zone", "expr", "words"),
    [
        (
            "America/New_York",
            "30 2 * * *",
            "02:30, which does not exist on 2026-03-08 in America/New_York (clocks jump from 02:00 to 03:00)",
        ),
        (
            "America/New_York",
            "30 1 * * *",
            "01:30, which happens twice on 2026-11-01 in America/New_York"
            " (clocks go back from 02:00 to 01:00)",
        ),
        ("Europe/Berlin", "0 2 * * 0", "02:00, which does not exist on 2026-03-29 in Europe/Berlin"),
        ("Europe/Berlin", "15 2 * * *", "02:15, which does not exist on 2026-03-29"),
    ],
)
def test_fire_times_in_a_dst_gap_or_overlap_are_refused(
    schedules: Callable[..., dict[str, object]], zone: str, expr: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        schedules(daily=expr, timezone=zone)
    assert f"schedule.daily '{expr}' fires at {words}" in caught.value.message
    assert "Pick a time outside" in caught.value.hint


@pytest.mark.parametrize(
    ("zone", "expr"),
    [("America/New_York", "30 2 * * 1-5"), ("Europe/Berlin", "30 1 * * *"), ("UTC", "30 2 * * *")],
)
def test_times_clear_of_dst_changes_are_accepted(
    schedules: Callable[..., dict[str, object]], zone: str, expr: str
) -> None:
    assert "daily" in schedules(daily=expr, timezone=zone)


def test_edition_keys_name_the_slot_in_the_zone() -> None:
    zone = load_zone("America/New_York")
    assert (
        edition_key("daily", datetime(2026, 3, 9, 11, 0, tzinfo=UTC), zone) == "daily-2026-03-09T07:00-04:00"
    )
    # The repeated 01:30 of a fall-back night gets two different keys.
    first, second = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert (
        edition_key("x", first, zone)
        == "x-2026-11-01T01:30-04:00"
        != edition_key("x", second, zone)
        == "x-2026-11-01T01:30-05:00"
    )
    assert [
        schedule_for_key(k)
        for k in ("daily-2026-03-09T07:00-04:00", "weekly-x", "manual-20260309T1", "special")
    ] == ["daily", "weekly", "manual", "manual"]


def test_start_scheduler_refuses_a_bad_schedule(world: World) -> None:
    bad = world.service(NEWSLETTER_SCHEDULE_DAILY="30 2 * * *")
    with pytest.raises(ConfigError, match="does not exist"):
        start_scheduler(bad)


# -- the CLI -------------------------------------------------------------------------


def test_schedule_command_prints_next_five_fire_times_per_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "NEWSLETTER_SCHEDULE_TIMEZONE": "Europe/Berlin",
        "NEWSLETTER_SCHEDULE_WEEKLY": "",
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
    }
    result = CliRunner().invoke(main, ["schedule"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    fires = [line for line in lines if line.startswith("  ")]
    assert len(fires) == 5
    assert all(" 07:00 CE" in line and "daily-" in line for line in fires)
    assert "weekly: off (schedule.weekly is empty)" in result.output
    assert "Time zone Europe/Berlin" in lines[0]


def test_schedule_command_reports_a_dst_clash_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["schedule"], env={"NEWSLETTER_SCHEDULE_DAILY": "30 2 * * *"})
    assert result.exit_code == 1
    assert "Error: schedule.daily '30 2 * * *' fires at 02:30, which does not exist" in result.output
    assert "Hint: Pick a time outside 02:00-03:00" in result.output


def test_send_refuses_to_run_beside_another_send_of_its_schedule(world: World) -> None:
    service = world.service()
    store = service.store
    other = SendLock(store.locks, lock_name("manual"), heartbeat=False)
    assert other.try_acquire()
    result = CliRunner().invoke(main, ["send", "--key", "manual-test", "--no-fetch"], env=world.env)
    assert result.exit_code == 1, result.output
    assert "Error: another send of schedule 'manual' is running (held by " in result.output
    assert store.editions.find_edition("manual-test") is None  # nothing was started
    other.release()
    result = CliRunner().invoke(main, ["send", "--key", "manual-test", "--no-fetch"], env=world.env)
    assert result.exit_code == 0, result.output
    assert store.locks.current(lock_name("manual")) is None  # released after the send


HOLD_AND_VANISH = """
import os
from newsletter.config import load_settings
from newsletter.service import Service

service = Service(load_settings())
with service.runner.send_lock("manual"):
    print("held", flush=True)
    os._exit(0)  # gone without releasing: what another machine's send looks like from here
"""


def test_a_lock_held_under_another_worker_name_is_not_judged_by_local_pids(world: World) -> None:
    """Regression: send locks named their holder by the system host name, not delivery.worker_name.
    Two containers sharing a host name then took each other's live locks at once (the holder's
    pid does not exist on the other machine) and ran two sends of one schedule side by side."""
    import os
    import subprocess
    import sys

    machine_b = {**os.environ, **world.env, "NEWSLETTER_DELIVERY_WORKER_NAME": "machine-b"}
    held = subprocess.run(
        [sys.executable, "-c", HOLD_AND_VANISH],
        env=machine_b,
        cwd=world.tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert held.stdout.strip() == "held", held.stderr
    service = world.service()
    holder = service.store.locks.current(lock_name("manual"))
    assert holder is not None and holder.holder.startswith("machine-b:")

    on_machine_a = CliRunner().invoke(
        main,
        ["send", "--key", "manual-test", "--no-fetch"],
        env={**world.env, "NEWSLETTER_DELIVERY_WORKER_NAME": "machine-a"},
    )
    assert on_machine_a.exit_code == 1, on_machine_a.output
    assert "another send of schedule 'manual' is running (held by machine-b:" in on_machine_a.output
    assert service.store.editions.find_edition("manual-test") is None

    # Machine B itself knows its process is gone and takes the lock over at once.
    on_machine_b = CliRunner().invoke(
        main,
        ["send", "--key", "manual-test", "--no-fetch"],
        env={**world.env, "NEWSLETTER_DELIVERY_WORKER_NAME": "machine-b"},
    )
    assert on_machine_b.exit_code == 0, on_machine_b.output
    assert service.store.editions.find_edition("manual-test") is not None
    assert service.store.locks.current(lock_name("manual")) is None


# -- the lock itself, on every configured database -----------------------------------


def test_one_holder_at_a_time_per_schedule(database_url: str) -> None:
    store = Store(database_url)
    try:
        clock = FakeClock(NOW)
        first = SendLock(store.locks, lock_name("daily"), ttl=600, clock=clock, heartbeat=False)
        second = SendLock(store.locks, lock_name("daily"), ttl=600, clock=clock, heartbeat=False)
        weekly = SendLock(store.locks, lock_name("weekly"), ttl=600, clock=clock, heartbeat=False)
        assert first.try_acquire()
        assert not second.try_acquire()
        assert weekly.try_acquire()  # another schedule is independent
        with pytest.raises(
            SendLockBusy,
            match=r"another send of schedule 'daily' is running \(held by .+ since 2026-01-05 12:00:00 UTC\)",
        ):
            second.acquire()
        clock.advance(timedelta(seconds=300))
        assert first.renew()  # a live holder pushes its expiry out...
        clock.advance(timedelta(seconds=400))
        assert not second.try_acquire()  # ...so it is not taken at the original expiry
        first.release()
        assert second.try_acquire()
        second.release()
        weekly.release()
        assert store.locks.current(lock_name("daily")) is None
    finally:
        store.dispose()


def test_a_dead_holders_lock_expires_and_is_taken_over_once(database_url: str) -> None:
    store = Store(database_url)
    try:
        clock = FakeClock(NOW)
        dead = SendLock(store.locks, lock_name("daily"), ttl=60, clock=clock, heartbeat=False)
        assert dead.try_acquire()
        clock.advance(timedelta(seconds=61))  # the holder crashed: no heartbeat renewed it
        takers = [
            SendLock(store.locks, lock_name("daily"), ttl=60, clock=clock, heartbeat=False) for _ in range(2)
        ]
        assert [t.try_acquire() for t in takers] == [True, False]
        assert not dead.renew()  # the old holder learns it lost the lock
        dead.release()  # and cannot release the new holder's lock
        held = store.locks.current(lock_name("daily"))
        assert held is not None and held.holder == takers[0].holder
        with hold_send_lock(store.locks, "weekly", clock=clock) as lock:
            assert store.locks.current(lock_name("weekly")).holder == lock.holder  # type: ignore[union-attr]
        assert store.locks.current(lock_name("weekly")) is None
    finally:
        store.dispose()


def test_edition_keys_are_unique_across_stores(database_url: str) -> None:
    one, two = Store(database_url), Store(database_url)
    try:
        slot = datetime(2026, 3, 9, 11, tzinfo=UTC)
        first, created_first = one.editions.create_edition(
            key="daily-2026-03-09T07:00-04:00", schedule="daily", as_of=slot
        )
        second, created_second = two.editions.create_edition(
            key="daily-2026-03-09T07:00-04:00", schedule="daily", as_of=slot
        )
        assert (created_first, created_second) == (True, False)
        assert first.id == second.id
    finally:
        one.dispose()
        two.dispose()


def test_the_next_run_starts_after_the_newest_edition_in_the_database(
    world: World, database_url: str
) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 10, tzinfo=UTC))  # Monday 05:00 New York

    def next_runs(**env: str) -> dict[str, str | None]:
        service: Service = world.service(clock=clock, NEWSLETTER_DATABASE_URL=database_url, **env)
        jobs = ScheduledEditions(service, load_schedules(service.settings, now=clock()))
        found = {s.name: jobs.next_run(s) for s in jobs.schedules}
        return {name: when.astimezone(ZONE).isoformat() if when else None for name, when in found.items()}

    # Nothing sent yet: each schedule starts at its next slot from now.
    assert next_runs() == {"daily": "2026-03-02T07:00:00-05:00", "weekly": "2026-03-02T07:00:00-05:00"}
    service = world.service(clock=clock, NEWSLETTER_DATABASE_URL=database_url)
    monday = datetime(2026, 3, 2, 12, tzinfo=UTC)  # 07:00 New York
    service.store.editions.create_edition(key="daily-2026-03-02T07:00-05:00", schedule="daily", as_of=monday)
    # Down from Monday until Thursday 05:00: the daily job is due at once for the slots it
    # missed (APScheduler coalesces them into one run); the weekly one had no edition yet.
    clock.advance(timedelta(days=3))
    assert next_runs() == {"daily": "2026-03-03T07:00:00-05:00", "weekly": "2026-03-09T07:00:00-04:00"}
    # A schedule turned off has no job; a new cron with no edition of its own starts from now.
    assert next_runs(NEWSLETTER_SCHEDULE_DAILY="", NEWSLETTER_SCHEDULE_WEEKLY="0 8 * * 4") == {
        "weekly": "2026-03-05T08:00:00-05:00"
    }


def test_a_lock_left_by_a_killed_process_on_this_host_is_taken_over(database_url: str) -> None:
    import os
    import socket
    import subprocess
    import sys

    store = Store(database_url)
    try:
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead_pid = int(gone.stdout)  # that process has exited
        name, expires = lock_name("manual"), NOW + timedelta(hours=1)
        here, elsewhere = f"{socket.gethostname()}:{dead_pid}:deadbeef", f"other-host:{dead_pid}:x"
        assert store.locks.insert(name, elsewhere, now=NOW, expires_at=expires)
        clock = FakeClock(NOW)
        alive_elsewhere = SendLock(store.locks, name, clock=clock, heartbeat=False)
        assert not alive_elsewhere.try_acquire()  # a holder on another host is never assumed dead
        assert store.locks.take_over(name, here, now=NOW, expires_at=expires, from_holder=elsewhere)
        assert alive_elsewhere.try_acquire()
        assert store.locks.current(lock_name("manual")).holder == alive_elsewhere.holder  # type: ignore[union-attr]
        mine = SendLock(store.locks, lock_name("manual"), clock=clock, heartbeat=False)
        assert not mine.try_acquire()  # a live holder in this process is respected
        alive_elsewhere.release()
        assert os.getpid() != dead_pid
    finally:
        store.dispose()


def test_start_scheduler_with_the_real_clock_starts_and_stops(world: World) -> None:
    """The web app's call: start_scheduler(service) in its loop, later handle.shutdown()."""
    service = world.service()

    handle = start_scheduler(service)
    running = handle.scheduler.running
    times = handle.next_run_times()
    handle.shutdown()
    still_running = handle.scheduler.running
    assert running and not still_running
    now = datetime.now(UTC)
    assert all(t is not None and now < t <= now + timedelta(days=7) for t in times.values())
    assert {t.strftime("%H:%M") for t in times.values() if t} == {"07:00"}
