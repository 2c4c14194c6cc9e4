"""APScheduler wiring: scheduled editions on time, once, and never empty.

``start_scheduler(service)`` starts a BackgroundScheduler (APScheduler 3.11, public API only)
with one job per enabled schedule: a CronTrigger read in ``schedule.timezone``, coalesce on,
max_instances 1 (a fire never overlaps the schedule's previous one), and an upkeep job every
five minutes. Each fire calls ``ScheduledEditions.run(name)`` in a worker thread, which:

- finds the slot it serves: the schedule's latest fire time at or before now;
- names the edition ``<schedule>-<slot in the zone>`` (unique in the database, so two
  processes firing one slot make one edition);
- records "skipped: too late" when it wakes more than ``schedule.misfire_grace`` after the
  slot (so APScheduler's own misfire_grace_time is None: a late wake must be recorded, not
  only logged);
- takes the schedule's send lock, fetches the feed with a conditional GET (a feed outage fails
  the edition, nothing is sent) and runs ``EditionRunner.run`` (the one send path; it records
  "skipped: no new reports" on a quiet day).

Downtime: jobs live in memory; at start each schedule's next run is its first slot after the
newest edition it has in the database. A slot that passed while the process was down is due at
once, and coalescing makes every missed slot one run for the latest: exactly one catch-up (sent
if within the grace, else recorded "skipped: too late"). A schedule with no edition yet, or a
new cron, starts from now.

Time in tests: ``ScheduledEditions`` reads the service's clock, so a test calls ``run`` at the
times the schedule's trigger gives; one test runs the real scheduler with a per-second trigger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from newsletter.editions.lock import SendLockBusy
from newsletter.errors import ConfigError, FeedError, NewsletterError
from newsletter.models import EditionStatus
from newsletter.scheduling.schedules import Schedule, load_schedules
from newsletter.service import Service

log = logging.getLogger("newsletter.scheduling.scheduler")
JOB_PREFIX = "edition:"
UPKEEP_JOB = "upkeep"
UPKEEP_INTERVAL = 300.0  # seconds between looks for unfinished editions and due retries
ENDED = (EditionStatus.SENT, EditionStatus.SKIPPED, EditionStatus.FAILED)
# How far back a fire looks for the slot it serves, widening until one is found (a fire wakes
# just after its slot, so the first window nearly always holds it).
SLOT_LOOKBACK = tuple(timedelta(seconds=s) for s in (60, 3600, 86400, 8 * 86400, 32 * 86400, 400 * 86400))


@dataclass(frozen=True)
class FireResult:
    """What one fire did. ``outcome``: sent, sending (deferred rows left), skipped, failed,
    done (the slot's edition had already ended, e.g. another process ran it), busy
    (another send of the schedule held the lock) or error."""

    schedule: str
    key: str
    slot: datetime
    outcome: str
    message: str


# -- one fire ---------------------------------------------------------------------


def fire(
    service: Service, schedule_name: str, slot: datetime, *, now: datetime, schedule: Schedule | None = None
) -> FireResult:
    """Run (or skip) the edition of one schedule slot, woken at ``now``; blocking.

    Never raises for an operator-fixable problem (feed down, lock busy, SMTP
    refusal): it records or logs it and returns; the scheduler keeps running.
    """
    runner = service.runner
    store = service.store
    if schedule is None:
        schedule = _schedule_named(service, schedule_name, now)
    key = schedule.key_for(slot)
    late = now - slot
    log.info(
        "fire %s (slot %s, woke %s after it)",
        key,
        slot.astimezone(schedule.zone).isoformat(),
        _duration(late),
    )

    if late > timedelta(seconds=schedule.misfire_grace):
        reason = (
            f"too late: woke {_duration(late)} after the slot,"
            f" more than schedule.misfire_grace ({schedule.misfire_grace} s)"
        )
        edition, created = store.editions.create_edition(
            key=key, schedule=schedule.name, as_of=slot, now=now, skipped_because=reason
        )
        if not created:
            return FireResult(
                schedule.name, key, slot, "done", f"edition {key} already exists ({edition.status.value})"
            )
        log.warning("edition %s skipped: %s", key, reason)
        return FireResult(schedule.name, key, slot, "skipped", f"skipped: {reason}")

    existing = store.editions.find_edition(key)
    if existing is not None and existing.status in ENDED:
        log.info("edition %s already ended (%s); nothing to do", key, existing.status.value)
        return FireResult(
            schedule.name, key, slot, "done", f"edition {key} already ended ({existing.status.value})"
        )

    try:
        result = runner.run(
            key=key, schedule=schedule.name, cadences=[schedule.cadence], as_of=slot, fetch=existing is None
        )
    except SendLockBusy as exc:
        log.warning("fire %s not run: %s", key, exc.message)
        return FireResult(schedule.name, key, slot, "busy", exc.message)
    except FeedError as exc:
        # The engine recorded the edition failed with the reason; the next fire tries again.
        log.error("edition %s failed: %s", key, exc.message)
        return FireResult(schedule.name, key, slot, "failed", exc.message)
    except NewsletterError as exc:
        # The edition stays unfinished and 'newsletter send --resume' completes it.
        log.error("edition %s stopped: %s (hint: %s)", key, exc.message, exc.hint)
        return FireResult(schedule.name, key, slot, "error", exc.message)

    edition = result.edition
    if not result.created and edition.status in ENDED:
        outcome = "done"
    else:
        outcome = {
            EditionStatus.SENT: "sent",
            EditionStatus.SKIPPED: "skipped",
            EditionStatus.FAILED: "failed",
        }.get(edition.status, "sending")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(edition.counts.items())) or "no rows"
    log.info("edition %s finished: %s (%s)", key, result.message or edition.status.value, counts)
    return FireResult(schedule.name, key, slot, outcome, result.message or edition.status.value)


def _schedule_named(service: Service, name: str, now: datetime) -> Schedule:
    for schedule in load_schedules(service.settings, now=now):
        if schedule.name == name:
            return schedule
    raise ConfigError(
        f"schedule {name!r} is not configured (turned off or unknown)",
        hint="Set schedule.daily / schedule.weekly.",
    )


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{days}d " if days else "") + f"{hours:d}h{minutes:02d}m{seconds:02d}s"
    return sign + text


def latest_slot(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's latest fire time at or before ``now`` (None: none in the last 400 days)."""
    for lookback in SLOT_LOOKBACK:
        slot = trigger.get_next_fire_time(None, now - lookback)
        if slot is None or slot > now:
            continue
        while (following := trigger.get_next_fire_time(slot, slot)) is not None and following <= now:
            slot = following
        return slot
    return None


# -- the jobs -----------------------------------------------------------------------


@dataclass
class ScheduledEditions:
    """The scheduler's jobs for one service: ``run`` fires a schedule, ``upkeep`` resumes.

    ``now`` is the service's clock (the real one in production, a fake one in tests).
    """

    service: Service
    schedules: list[Schedule]
    results: list[FireResult] = field(default_factory=list)

    def now(self) -> datetime:
        return (self.service.clock or _utcnow)()

    def run(self, schedule_name: str) -> FireResult:
        """The job of one schedule: fire the slot it is due for now."""
        now = self.now()
        [schedule] = [s for s in self.schedules if s.name == schedule_name]
        slot = latest_slot(schedule.trigger, now)
        if slot is None:
            raise RuntimeError(f"schedule {schedule_name} has no slot before {now.isoformat()}")
        result = fire(self.service, schedule_name, slot, now=now, schedule=schedule)
        self.results.append(result)
        return result

    def upkeep(self) -> None:
        """Resume editions a crash left unfinished and send deferred rows that are due."""
        try:
            self.service.runner.upkeep()
        except Exception:  # the scheduler keeps running whatever one look costs
            log.exception("looking for unfinished editions failed")

    def next_run(self, schedule: Schedule) -> datetime | None:
        """Where the schedule's job starts: its first slot after its newest edition (due at
        once if that has passed: the catch-up), or its next slot from now if it has none."""
        last = self.service.store.editions.last_slot(schedule.name)
        return schedule.trigger.get_next_fire_time(last, self.now())


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- the scheduler ------------------------------------------------------------------


@dataclass
class SchedulerHandle:
    """The running scheduler of one process. ``shutdown()`` stops it."""

    scheduler: BackgroundScheduler
    jobs: ScheduledEditions

    @property
    def schedules(self) -> list[Schedule]:
        return self.jobs.schedules

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop firing; ``wait``: also wait for the fires already running to end."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
            log.info("scheduler stopped")

    def next_run_times(self) -> dict[str, datetime | None]:
        """Each schedule's next fire time, in its zone."""
        times: dict[str, datetime | None] = {}
        for schedule in self.schedules:
            job = self.scheduler.get_job(JOB_PREFIX + schedule.name)
            times[schedule.name] = (
                job.next_run_time.astimezone(schedule.zone) if job and job.next_run_time else None
            )
        return times


def start_scheduler(service: Service, *, schedules: list[Schedule] | None = None) -> SchedulerHandle:
    """Start the edition scheduler in a background thread; returns a handle with ``shutdown()``.

    ``schedules``: the ones to run (default: the configured ones). Raises ConfigError for a
    bad schedule (one line, with a hint).
    """
    if schedules is None:
        schedules = load_schedules(service.settings, now=_utcnow())
    jobs = ScheduledEditions(service, schedules)
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_listener(_overlap_refused, EVENT_JOB_MAX_INSTANCES)
    for schedule in jobs.schedules:
        scheduler.add_job(
            jobs.run,
            trigger=schedule.trigger,
            args=[schedule.name],
            id=JOB_PREFIX + schedule.name,
            name=f"{schedule.name} edition ({schedule.cron}, {schedule.zone.key})",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # fire() judges a late wake and records it
            next_run_time=jobs.next_run(schedule),
        )
    scheduler.add_job(
        jobs.upkeep,
        trigger="interval",
        seconds=UPKEEP_INTERVAL,
        id=UPKEEP_JOB,
        name="upkeep (resume unfinished editions, send due retries)",
        coalesce=True,
        max_instances=1,
        next_run_time=_utcnow(),
    )
    scheduler.start()
    handle = SchedulerHandle(scheduler, jobs)
    for name, when in handle.next_run_times().items():
        log.info("schedule %s: next edition at %s", name, when.isoformat() if when else "never")
    if not jobs.schedules:
        log.warning(
            "no schedule enabled (schedule.daily and schedule.weekly are empty); only 'newsletter send' sends"
        )
    return handle


def _overlap_refused(event: JobEvent) -> None:
    log.warning("job %s skipped: its previous run is still going (max_instances 1)", event.job_id)
