"""The console's one adapter to the edition engine: previews, test sends, sends, pause and resume.

Everything the console asks of ``newsletter.editions`` goes through ``ConsoleEngine``,
so a change in the engine's entry points is a change here only. Sends started here
run ``EditionRunner.run`` / ``resume`` (the one send path) in a background thread.

Pause and resume are the engine's (``EditionRunner.pause`` / ``resume``), the same the API and
`newsletter pause` / `resume` use: every sender of the edition, whichever process or machine
runs it (this console's threads, `newsletter send`, the scheduler, workers), stops at its next
batch and gives its unsent rows back; nothing takes a paused edition up but a resume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from newsletter.content.planner import why_included
from newsletter.editions.preview import HeldBack, Preview, held_back, read_feed, render_preview, send_test
from newsletter.editions.runner import EditionRunner
from newsletter.errors import EditionError, NewsletterError
from newsletter.models import Cadence, Edition, EditionStatus, Report
from newsletter.scheduling.schedules import Schedule, load_schedules
from newsletter.service import Service

log = logging.getLogger("newsletter.admin.engine")
MANUAL = "manual"  # "send now" to every reader, whatever their cadence
UNFINISHED = (EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED)
RESUME_WAIT = 5.0  # seconds a resume waits to see the edition taken up (or why not)
PLAN_WAIT = 120.0  # seconds a console send waits for its planning, beyond the feed's timeout


@dataclass(frozen=True)
class Audience:
    """Who an edition of ``schedule`` would mail now, and what the count does not include yet."""

    schedule: str
    readers: int
    held: HeldBack  # reports the settle window still holds back
    feed: str  # why the feed was not read now ("" when it was)


@dataclass(frozen=True)
class SendStarted:
    edition: Edition
    readers: int  # the rows planned: the count confirmed, audited and mailed


@dataclass(frozen=True)
class UpcomingFire:
    schedule: str
    cron: str
    times: list[datetime]


class ConsoleEngine:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self._running: set[str] = set()  # keys of the editions this console's threads are sending
        self._failed: dict[str, NewsletterError] = {}  # why a send of this console stopped, by key
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def runner(self) -> EditionRunner:
        return self.service.runner  # built lazily by the service

    def now(self) -> datetime:
        return (self.service.clock or (lambda: datetime.now(UTC)))()

    # -- schedules ----------------------------------------------------------------------

    def schedules(self) -> list[Schedule]:
        return load_schedules(self.settings)

    def upcoming(self, count: int = 3) -> list[UpcomingFire]:
        now = self.now()
        return [UpcomingFire(s.name, s.cron, s.next_fire_times(count, after=now)) for s in self.schedules()]

    def cadences_for(self, schedule: str) -> list[Cadence] | None:
        if schedule == MANUAL:
            return None
        for s in self.schedules():
            if s.name == schedule:
                return [s.cadence]
        raise EditionError(
            f"no schedule named {schedule!r}",
            hint="The dashboard lists the schedules (schedule.daily, schedule.weekly).",
        )

    def audience(self, schedule: str) -> Audience:
        """How many readers an edition of ``schedule`` would mail now: the number a send is confirmed with.

        Reads the feed first (the engine's one conditional fetch), then counts as the send's
        planning chooses (``EditionPlanner.audience``), so the count shown is the count planned.
        """
        cadences = self.cadences_for(schedule)
        feed = read_feed(self.runner)
        readers = self.runner.planner.audience(cadences=cadences, as_of=self.runner.clock())
        return Audience(schedule, readers, held_back(self.runner), feed)

    # -- preview and test send ---------------------------------------------------------------

    def preview(self, email: str | None, *, fetch: bool = True) -> Preview:
        """What ``email`` would get now; reads the feed first unless ``fetch=False`` (the page's frames,
        loaded right after the page that read it)."""
        feed = read_feed(self.runner) if fetch else ""
        return render_preview(self.runner, email=email, feed=feed)

    @staticmethod
    def reasons(preview: Preview) -> list[tuple[Report, str]]:
        """Each report of a preview with why it is in (new since the last digest, which topic matched)."""
        return [(report, why_included(preview.subscriber, report)) for report in preview.selection.reports]

    def send_test(self, reader: str, to_address: str) -> None:
        """Mail ``reader``'s next digest to ``to_address`` (the operator), marked as a test.

        The engine's own test send (`newsletter send --test-to` uses it too): the real
        message, signed as a send's; its personal links are test links that change nothing.
        """
        send_test(self.runner, to_address=to_address, email=reader)

    # -- sending ---------------------------------------------------------------------------------

    def start_send(self, schedule: str, *, confirmed: int) -> SendStarted:
        """Start an edition of ``schedule`` now, in the background, for exactly ``confirmed`` readers.

        The engine reads the feed, plans under the schedule's send lock and, before writing
        any row, refuses (AudienceChanged: nothing sent, no reader's state changed) when the
        plan is not the confirmed count. Returns once the edition is planned, with the
        number planned (the number to audit), or raises why it did not start.
        """
        cadences = self.cadences_for(schedule)
        key = f"{schedule}-now-{self.now():%Y%m%dT%H%M%S.%fZ}"
        planned: list[int] = []
        self._background(
            lambda: self.runner.run(
                key=key,
                schedule=schedule,
                cadences=cadences,
                expect=confirmed,
                on_planned=planned.append,
            ),
            key=key,
        )
        wait = self.settings.reports.timeout + PLAN_WAIT
        deadline = time.monotonic() + wait
        while not planned:
            with self._lock:
                failed = self._failed.pop(key, None)
                running = key in self._running
            if failed is not None:
                raise failed  # the audience changed, the feed failed, another send holds the lock
            edition = self.store.editions.find_edition(key)
            if edition is not None and edition.status is EditionStatus.SKIPPED and not running:
                raise EditionError(f"edition {key} was skipped: {edition.reason}")
            if time.monotonic() > deadline:
                raise EditionError(
                    f"edition {key} was not planned within {wait:.0f} s",
                    hint="It goes on in the background; see the dashboard.",
                )
            time.sleep(0.05)
        return SendStarted(self._wait_for(key), planned[0])

    def pause(self, edition_id: int, *, by: str, client: str = "") -> Edition:
        """Pause the edition (the engine's one pause, audited there): whoever sends it stops at
        its next batch."""
        return self.runner.pause(self._edition(edition_id), by=by, client=client)

    def resume(self, edition_id: int, *, by: str = "an operator", client: str = "") -> Edition:
        """Resume a paused edition in the background (the engine's resume, audited there); returns
        it once the resume has taken it, or raises why it could not (another send still holds
        its schedule's lock: the stopped sender finishing its messages in flight)."""
        edition = self._edition(edition_id)
        if edition.status is not EditionStatus.PAUSED:
            raise EditionError(f"edition {edition.key} is {edition.status.value}, not paused")
        self._background(lambda: self.runner.resume(edition, by=by, client=client), key=edition.key)
        deadline = time.monotonic() + RESUME_WAIT
        while time.monotonic() < deadline:
            with self._lock:
                failed = self._failed.pop(edition.key, None)
            if failed is not None:
                raise failed
            fresh = self._edition(edition_id)
            if fresh.status is not EditionStatus.PAUSED:
                return fresh
            time.sleep(0.05)
        return self._edition(edition_id)

    def edition(self, edition_id: int) -> Edition:
        return self._edition(edition_id)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for this console's background sends (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- inside ------------------------------------------------------------------------------------

    def _edition(self, edition_id: int) -> Edition:
        edition = self.store.editions.get_edition(edition_id)
        if edition is None:
            raise EditionError(f"no edition #{edition_id}")
        return edition

    def _wait_for(self, key: str, timeout: float = 10.0) -> Edition:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            edition = self.store.editions.find_edition(key)
            if edition is not None:
                return edition
            with self._lock:
                failed = self._failed.pop(key, None)
            if failed is not None:
                raise failed  # e.g. another send of the schedule holds its lock
            time.sleep(0.05)
        raise EditionError(
            f"edition {key} did not start within {timeout:.0f} s",
            hint="Another send of this schedule may hold its lock; see the dashboard.",
        )

    def _background(self, run: Callable[[], object], *, key: str) -> None:
        """Run a send in a thread; a pause stops it as any sender (the engine's status check)."""

        def target() -> None:
            with self._lock:
                self._running.add(key)
            try:
                run()
            except NewsletterError as exc:
                log.warning("console send %s stopped: %s", key, exc.message)
                with self._lock:
                    self._failed[key] = exc
            except Exception:
                log.exception("console send %s failed", key)
            finally:
                with self._lock:
                    self._running.discard(key)

        thread = threading.Thread(target=target, name=f"console-send-{key}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
