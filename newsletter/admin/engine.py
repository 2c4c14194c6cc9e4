"""The console's one adapter to the edition engine: previews, test sends, sends, pause and resume.

Everything the console asks of ``newsletter.editions`` goes through ``ConsoleEngine``,
so a change in the engine's entry points is a change here only. Sends started here
run ``EditionRunner.run`` / ``resume`` (the one send path) in a background thread.

Pause: the engine has no operator pause yet, so this adapter pauses cooperatively.
The edition is marked paused in the database; a send this process runs hears it on
its next outcome (the ``on_outcome`` hook raises ``PausedByOperator``), the sender
puts its queued rows back to pending as it does for any stop, and the rows it had
claimed but not queued are released here. An edition that no sender is working on
(deferred rows waiting) simply stays paused: the scheduler's upkeep leaves paused
editions to an operator. A send this console did not start (the scheduler's,
`newsletter send`'s) cannot hear the request, so pausing it is refused with the holder of its
schedule's lock rather than recorded and then silently overwritten when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from newsletter.content.planner import why_included
from newsletter.delivery.sender import worker_name
from newsletter.editions.lock import lock_name
from newsletter.editions.preview import HeldBack, Preview, held_back, read_feed, render_preview, send_test
from newsletter.editions.runner import EditionRunner
from newsletter.errors import EditionError, NewsletterError
from newsletter.models import Cadence, DeliveryOutcome, DeliveryState, Edition, EditionStatus, Report
from newsletter.scheduling.schedules import Schedule, load_schedules
from newsletter.service import Service

log = logging.getLogger("newsletter.admin.engine")
MANUAL = "manual"  # "send now" to every reader, whatever their cadence
UNFINISHED = (EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED)
STATUS_POLL = 0.5  # seconds between looks at the edition's status during a send
PLAN_WAIT = 120.0  # seconds a console send waits for its planning, beyond the feed's timeout


class PausedByOperator(Exception):
    """Raised from the send's outcome hook to stop it: an operator paused the edition."""


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
        self._pause_requests: set[int] = set()
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
            lambda watch: self.runner.run(
                key=key,
                schedule=schedule,
                cadences=cadences,
                expect=confirmed,
                on_planned=planned.append,
                on_outcome=watch,
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

    def pause(self, edition_id: int, *, by: str) -> Edition:
        edition = self._edition(edition_id)
        if edition.status not in (EditionStatus.PLANNED, EditionStatus.SENDING):
            raise EditionError(
                f"edition {edition.key} is {edition.status.value}; only a sending edition can be paused"
            )
        with self._lock:
            mine = edition.key in self._running
        held = self.store.locks.current(lock_name(edition.schedule))
        if not mine and held is not None and held.expires_at > self.now():
            # A send of another process or of the scheduler: it has no pause hook to hear us, and
            # marking the edition paused would be a lie its end would overwrite.
            raise EditionError(
                f"edition {edition.key} is being sent by {held.holder} (the scheduler or 'newsletter send'), which the console cannot interrupt",
                hint="Pause works on sends started from the console or the API, and on editions no sender is working on; stop that send where it runs, then pause here.",
            )
        with self._lock:
            self._pause_requests.add(edition_id)
        self.store.editions.set_edition_status(
            edition_id, EditionStatus.PAUSED, reason=f"paused by {by}", now=self.now()
        )
        return self._edition(edition_id)

    def resume(self, edition_id: int) -> Edition:
        edition = self._edition(edition_id)
        if edition.status is not EditionStatus.PAUSED:
            raise EditionError(f"edition {edition.key} is {edition.status.value}, not paused")
        with self._lock:
            self._pause_requests.discard(edition_id)
        self._background(lambda watch: self.runner.resume(edition, on_outcome=watch), key=edition.key)
        return edition

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

    def _background(self, run: Callable[[Callable[[DeliveryOutcome], None]], object], *, key: str) -> None:
        state: dict[str, Any] = {"checked": time.monotonic(), "edition_id": None, "raised": False}

        def watch(_outcome: DeliveryOutcome) -> None:
            if state["raised"]:
                # Once only: the sender collects the results still in flight after the stop and must
                # record them (a row sent but not recorded would be sent again on resume).
                return
            edition_id = state["edition_id"]
            if edition_id is None:
                found = self.store.editions.find_edition(key)
                edition_id = state["edition_id"] = found.id if found else None
            with self._lock:
                asked = edition_id in self._pause_requests
            if (
                not asked
                and edition_id is not None
                and time.monotonic() - float(state["checked"] or 0) > STATUS_POLL
            ):
                # Paused from another process (a second console): the database says so.
                state["checked"] = time.monotonic()
                asked = self._edition(int(edition_id)).status is EditionStatus.PAUSED
            if asked:
                state["raised"] = True
                raise PausedByOperator()

        def target() -> None:
            with self._lock:
                self._running.add(key)
            try:
                run(watch)
            except PausedByOperator:
                self._settle_pause(key)
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

    def _settle_pause(self, key: str) -> None:
        """After a paused run stopped: rows it claimed but never queued go back to pending."""
        edition = self.store.editions.find_edition(key)
        if edition is None:
            return
        mine = worker_name(self.settings.delivery.worker_name)
        held = [
            row_id
            for row_id, _subscriber, claimed_by in self.store.outbox.sending_rows(edition.id)
            if claimed_by == mine
        ]
        if held:
            self.store.outbox.set_rows_state(
                held, DeliveryState.PENDING, reply="edition paused by an operator"
            )
        reason = edition.reason if edition.status is EditionStatus.PAUSED else "paused by an operator"
        self.store.editions.set_edition_status(
            edition.id, EditionStatus.PAUSED, reason=reason, now=self.now()
        )
        log.info("edition %s paused by an operator; %d claimed rows released", key, len(held))
