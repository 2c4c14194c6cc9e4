"""APScheduler wiring: scheduled editions on time, once, and never empty.

``start_scheduler(service)`` (inside a running event loop, e.g. the web app's
lifespan) starts an AsyncIOScheduler whose jobs live in the service's database
(SQLAlchemyJobStore, table ``scheduler_jobs``): one CronTrigger per enabled
schedule, read in ``schedule.timezone``, with coalesce on, max_instances 1 and
``misfire_grace_time = schedule.misfire_grace``.

Each fire calls ``fire(service, name, slot)`` in a worker thread. ``fire``:

- names the edition ``<schedule>-<slot in the zone>`` (unique in the database, so
  two processes firing one slot make one edition);
- records "skipped: too late" when it wakes more than the grace after the slot;
- takes the schedule's send lock (``newsletter.editions.lock``), fetches the feed
  with a conditional GET (a feed outage fails the edition, nothing is sent) and
  runs ``EditionRunner.run`` (the one send path; it records "skipped: no new
  reports" on a quiet day).

After days down the stored job's next run time lies in the past; coalescing turns
every missed slot into one run for the latest, so exactly one catch-up edition
follows (sent if within the grace, otherwise recorded "skipped: too late").

Two deliberate departures from stock APScheduler, both to honour an injected
clock (tests drive time without sleeping): the scheduler computes "now" from
``clock`` when looking for due jobs, and the executor hands each job its slot
time and applies the grace itself, recording the skip instead of only logging it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED

from newsletter.editions.lock import SendLockBusy
from newsletter.editions.runner import EditionRunner
from newsletter.errors import ConfigError, FeedError, NewsletterError
from newsletter.models import EditionStatus
from newsletter.scheduling.schedules import Schedule, load_schedules
from newsletter.service import Service

log = logging.getLogger("newsletter.scheduling.scheduler")
JOB_TABLE = "scheduler_jobs"
JOB_PREFIX = "edition:"
ENDED = (EditionStatus.SENT, EditionStatus.SKIPPED, EditionStatus.FAILED)
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    service: Service,
    schedule_name: str,
    slot: datetime,
    *,
    now: datetime | None = None,
    runner: EditionRunner | None = None,
    clock: Clock | None = None,
    schedule: Schedule | None = None,
) -> FireResult:
    """Run (or skip) the edition of one schedule slot; blocking, call it in a worker thread.

    Never raises for an operator-fixable problem (feed down, lock busy, SMTP
    refusal): it records or logs it and returns; the scheduler keeps running.
    """
    clock = clock or _utcnow
    now = now or clock()
    runner = runner or service.runner
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
        reason = f"too late: woke {_duration(late)} after the slot, more than schedule.misfire_grace ({schedule.misfire_grace} s)"
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


async def run_scheduled_edition(
    schedule_name: str,
    *,
    service: Service | None = None,
    runner: EditionRunner | None = None,
    slot: datetime | None = None,
    clock: Clock | None = None,
) -> FireResult:
    """The job function stored in the job store (by reference): one fire, off the event loop.

    ``EditionExecutor`` supplies the keywords (they cannot be pickled into the job store).
    """
    if service is None or slot is None:
        raise RuntimeError("run_scheduled_edition runs under EditionExecutor, which passes service and slot")
    clock = clock or _utcnow
    return await asyncio.to_thread(
        fire, service, schedule_name, slot, now=clock(), runner=runner, clock=clock
    )


# -- APScheduler pieces -----------------------------------------------------------


class EditionExecutor(AsyncIOExecutor):
    """Runs edition jobs as tasks on the loop, handing each its slot time and the service.

    Stock executors call the job without its scheduled time and judge misfires by
    the real clock; an edition needs the slot for its key and ``fire`` records a
    late wake, so this executor passes both through.
    """

    def __init__(self, *, service: Service, runner: EditionRunner, clock: Clock) -> None:
        super().__init__()
        self.service = service
        self.runner = runner
        self.clock = clock
        self.results: list[FireResult] = []

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        async def run() -> list[JobExecutionEvent]:
            events = []
            for run_time in run_times:
                try:
                    result = await job.func(
                        *job.args, service=self.service, runner=self.runner, slot=run_time, clock=self.clock
                    )
                except Exception as exc:  # logged and reported; the scheduler keeps running
                    log.exception("job %s failed for slot %s", job.id, run_time)
                    events.append(
                        JobExecutionEvent(
                            EVENT_JOB_ERROR,
                            job.id,
                            job._jobstore_alias,
                            run_time,
                            exception=exc,
                            traceback=traceback.format_exc(),
                        )
                    )
                else:
                    self.results.append(result)
                    events.append(
                        JobExecutionEvent(
                            EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=result
                        )
                    )
            return events

        def done(f: asyncio.Future[list[JobExecutionEvent]]) -> None:
            self._pending_futures.discard(f)
            try:
                events = f.result()
            except BaseException as exc:  # cancelled at shutdown
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        task = self._eventloop.create_task(run())
        task.add_done_callback(done)
        self._pending_futures.add(task)


class ClockedScheduler(AsyncIOScheduler):
    """An AsyncIOScheduler that asks ``clock`` for the time when it looks for due jobs.

    ``_process_jobs`` follows APScheduler 3.11's own, with the clock in place of
    ``datetime.now`` and a log line for slots coalesced away after downtime.
    """

    def __init__(self, *, clock: Clock, **options: Any) -> None:
        self._clock = clock
        super().__init__(**options)

    def _process_jobs(self) -> float | None:
        if self.state == STATE_PAUSED:
            return None
        now = self._clock().astimezone(self.timezone)
        next_wakeup: datetime | None = None
        events: list[Any] = []
        with self._jobstores_lock:
            for alias, jobstore in self._jobstores.items():
                try:
                    due_jobs = jobstore.get_due_jobs(now)
                except Exception as exc:  # database briefly away: try again later
                    log.warning("cannot read jobs from job store %r: %s", alias, exc)
                    retry = now + timedelta(seconds=self.jobstore_retry_interval)
                    next_wakeup = retry if next_wakeup is None or retry < next_wakeup else next_wakeup
                    continue
                for job in due_jobs:
                    executor = self._lookup_executor(job.executor)
                    run_times = job._get_run_times(now)
                    if len(run_times) > 1 and job.coalesce:
                        log.warning(
                            "job %s missed %d slots (%s to %s); coalesced into one run for the latest",
                            job.id,
                            len(run_times),
                            run_times[0],
                            run_times[-1],
                        )
                    run_times = run_times[-1:] if run_times and job.coalesce else run_times
                    if run_times:
                        try:
                            executor.submit_job(job, run_times)
                        except MaxInstancesReachedError:
                            log.warning(
                                "job %s skipped: the previous run is still going (max_instances %d)",
                                job.id,
                                job.max_instances,
                            )
                            events.append(
                                JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times)
                            )
                        else:
                            events.append(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, alias, run_times))
                        following = job.trigger.get_next_fire_time(run_times[-1], now)
                        if following:
                            job._modify(next_run_time=following)
                            jobstore.update_job(job)
                        else:
                            self.remove_job(job.id, alias)
                store_next = jobstore.get_next_run_time()
                if store_next and (next_wakeup is None or store_next < next_wakeup):
                    next_wakeup = store_next.astimezone(self.timezone)
        for event in events:
            self._dispatch_event(event)
        if self.state == STATE_PAUSED or next_wakeup is None:
            return None
        return max((next_wakeup - self._clock()).total_seconds(), 0.0)


@dataclass
class SchedulerHandle:
    """The running scheduler of one process. ``shutdown()`` stops it (jobs stay stored)."""

    scheduler: ClockedScheduler
    executor: EditionExecutor
    schedules: list[Schedule]
    upkeep: asyncio.Task[None] | None = None

    def shutdown(self) -> None:
        if self.upkeep is not None:
            self.upkeep.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            log.info("scheduler stopped")

    def next_run_times(self) -> dict[str, datetime | None]:
        """Each schedule's stored next fire time, in its zone."""
        times: dict[str, datetime | None] = {}
        for schedule in self.schedules:
            job = self.scheduler.get_job(JOB_PREFIX + schedule.name)
            times[schedule.name] = (
                job.next_run_time.astimezone(schedule.zone) if job and job.next_run_time else None
            )
        return times

    async def run_due(self) -> list[FireResult]:
        """Wake the scheduler now (by its clock) and wait for the fires it starts.

        What the scheduler's own timer does, made awaitable for tests and the CLI.
        """
        start = len(self.executor.results)
        wait = self.scheduler._process_jobs()
        self.scheduler._start_timer(wait)
        while pending := [f for f in self.executor._pending_futures if not f.done()]:
            await asyncio.wait(pending)
        return self.executor.results[start:]


def start_scheduler(service: Service, *, clock: Clock | None = None) -> SchedulerHandle:
    """Start the edition scheduler on the running event loop; returns a handle with ``shutdown()``.

    Raises ConfigError for a bad schedule (one line, with a hint) and RuntimeError
    outside a running loop. Jobs persist in the database: a job whose cron and zone
    are unchanged keeps its stored next run time, so slots missed while the
    process was down are caught up (coalesced into one).
    """
    asyncio.get_running_loop()  # AsyncIOScheduler binds to the running loop
    clock = clock or _utcnow
    schedules = load_schedules(service.settings, now=clock())
    store = service.store
    # The service's runner uses the real clock; a fake clock needs its own runner.
    runner = (
        service.runner
        if clock is _utcnow
        else EditionRunner(service.settings, store, service.signer, clock=clock)
    )
    executor = EditionExecutor(service=service, runner=runner, clock=clock)
    scheduler = ClockedScheduler(
        clock=clock,
        timezone=UTC,
        jobstores={"default": SQLAlchemyJobStore(engine=store.engine, tablename=JOB_TABLE)},
        executors={"default": executor},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": service.settings.schedule.misfire_grace,
        },
    )
    scheduler.start(paused=True)  # job store open, nothing runs until the jobs match the config
    _sync_jobs(scheduler, schedules, now=clock())
    scheduler.resume()
    handle = SchedulerHandle(scheduler, executor, schedules)
    handle.upkeep = asyncio.get_running_loop().create_task(_upkeep_loop(service, runner))
    for name, when in handle.next_run_times().items():
        log.info("schedule %s: next edition at %s", name, when.isoformat() if when else "never")
    if not schedules:
        log.warning(
            "no schedule enabled (schedule.daily and schedule.weekly are empty); only 'newsletter send' sends"
        )
    return handle


UPKEEP_INTERVAL = 300.0  # seconds between looks for unfinished editions and due retries


async def _upkeep_loop(service: Service, runner: EditionRunner) -> None:
    while True:
        try:
            await asyncio.to_thread(runner.upkeep)
        except Exception:  # the scheduler keeps running whatever one look costs
            log.exception("looking for unfinished editions failed")
        await asyncio.sleep(UPKEEP_INTERVAL)


def _sync_jobs(scheduler: ClockedScheduler, schedules: list[Schedule], *, now: datetime) -> None:
    """Make the stored jobs match the config; keep a stored next run time when the trigger is unchanged."""
    wanted = {JOB_PREFIX + s.name: s for s in schedules}
    for job in scheduler.get_jobs():
        if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
            log.info("schedule %s turned off; its job is removed", job.id.removeprefix(JOB_PREFIX))
            scheduler.remove_job(job.id)
    for job_id, schedule in wanted.items():
        existing = scheduler.get_job(job_id)
        if (
            existing is not None
            and existing.next_run_time is not None
            and repr(existing.trigger) == repr(schedule.trigger)
        ):
            next_run = existing.next_run_time
        else:
            next_run = schedule.trigger.get_next_fire_time(None, now)
        scheduler.add_job(
            run_scheduled_edition,
            trigger=schedule.trigger,
            args=[schedule.name],
            id=job_id,
            name=f"{schedule.name} edition ({schedule.cron}, {schedule.zone.key})",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=schedule.misfire_grace,
            next_run_time=next_run,
        )
