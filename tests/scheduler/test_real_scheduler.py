"""The real APScheduler (a background thread, the real clock) with triggers that fire within
seconds: it fires each slot once, never runs a schedule's fires side by side, and a slot missed
while the process was down is caught up (here: recorded too late) as soon as it starts."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger

from newsletter.models import EditionStatus
from newsletter.scheduling.scheduler import start_scheduler
from newsletter.scheduling.schedules import Schedule, load_schedules, load_zone
from newsletter.service import Service
from tests.factories import Item, rss
from tests.servers import FeedServer, wait_until

from .conftest import World

EVERY_DAY = {"NEWSLETTER_SCHEDULE_DAILY": "0 7 * * *", "NEWSLETTER_SCHEDULE_WEEKLY": ""}
READERS = ["ana@example.org", "ben@example.org"]


def daily(service: Service, trigger: CronTrigger) -> Schedule:
    [schedule] = load_schedules(service.settings)
    return dataclasses.replace(schedule, trigger=trigger)


def test_every_second_one_fire_at_a_time(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The first fire hangs on the feed for a while: the fires due meanwhile are refused, not
    run beside it; once the feed answers, every reader gets the one digest."""
    feed = FeedServer(held=True)
    published = datetime.now(UTC) - timedelta(hours=2)
    url = feed.serve("/feed.xml", rss([Item("Report of today", "today", published)]).encode())
    service = world.service(**EVERY_DAY, NEWSLETTER_REPORTS_FEED=url)
    for email in READERS:
        world.subscribe(service, email)
    schedule = daily(service, CronTrigger(second="*", timezone=load_zone(service.settings.schedule.timezone)))
    caplog.set_level(logging.WARNING, logger="newsletter.scheduling.scheduler")
    handle = start_scheduler(service, schedules=[schedule])
    try:
        assert feed.requested.wait(10), "the first fire never fetched the feed"
        wait_until(
            lambda: any("still going" in r.getMessage() for r in caplog.records),
            timeout=10,
            what="a fire refused while the first one runs",
        )
        feed.release.set()
        world.sink.wait_for(count=len(READERS), timeout=30)
    finally:
        handle.shutdown(wait=True)
        feed.close()
    editions = world.editions(service)
    assert [e.status for e in editions].count(EditionStatus.SENT) == 1
    assert all(e.status in (EditionStatus.SENT, EditionStatus.SKIPPED) for e in editions)
    sent = next(e for e in editions if e.status is EditionStatus.SENT)
    assert sent.as_of.microsecond == 0 and datetime.now(UTC) - sent.as_of < timedelta(minutes=1)
    assert world.received() == sorted((r, sent.key) for r in READERS)


def test_a_slot_missed_while_down_is_taken_up_at_start(world: World) -> None:
    """Yesterday's edition is in the database and today's slot passed two hours ago, while
    the process was down: at start the job runs at once, and the slot is recorded too late."""
    service = world.service(**EVERY_DAY)
    zone = load_zone(service.settings.schedule.timezone)
    slot = (datetime.now(UTC) - timedelta(hours=2)).astimezone(zone).replace(second=0, microsecond=0)
    schedule = daily(service, CronTrigger(hour=slot.hour, minute=slot.minute, timezone=zone))
    yesterday = slot - timedelta(days=1)
    service.store.editions.create_edition(
        key=schedule.key_for(yesterday), schedule="daily", as_of=yesterday, skipped_because="a test"
    )
    handle = start_scheduler(service, schedules=[schedule])
    try:
        missed = wait_until(
            lambda: service.store.editions.find_edition(schedule.key_for(slot)),
            timeout=10,
            what="the catch-up",
        )
    finally:
        handle.shutdown(wait=True)
    assert missed.status is EditionStatus.SKIPPED
    assert missed.reason.startswith("too late: woke 2h00m")
