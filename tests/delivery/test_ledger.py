"""The delivery ledger: every reader gets every report in their topics exactly once.

Named regressions for the four ways the promise broke (late or backdated reports, overflow,
overlapping editions, workers on SQLite: see test_upkeep), then a Hypothesis state machine
that interleaves what operators and the world do and checks the promise after every step.
"""

from __future__ import annotations

import os
import re
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from newsletter.models import Cadence, DeliveryState, EditionStatus, Report, SubscriberStatus
from newsletter.sink.faults import FaultRule
from newsletter.subscriptions import add_subscriber
from tests.delivery.helpers import flat
from tests.factories import PG_URL_VAR, FakeClock, ScratchDatabase, Services, pg_server_url, service_env
from tests.invariants import parse

TOKEN = re.compile(r"\bR(\d{4})\b")


def report(n: int, published: Any, topics: tuple[str, ...] = ()) -> Report:
    """Report n: its title carries the token Rnnnn, found again in the digests' text."""
    return Report(
        id=f"ledger-{n}",
        title=f"R{n:04d} field notes",
        url=f"https://example.com/r/{n}",
        published=published,
        teaser="News.",
        topics=topics,
    )


def received_reports(messages: list[Any]) -> dict[str, list[int]]:
    """Report numbers each recipient received, over all their messages (repeats kept)."""
    got: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        text = parse(m.raw).get_body(("plain",)).get_content()
        got[m.rcpt_tos[0]].extend(int(n) for n in TOKEN.findall(text))
    return got


def test_a_report_stored_after_the_last_digest_but_dated_before_it_reaches_every_reader(world):
    """Regression: "new for you" compared the publisher's date with the last digest, so a report
    that appeared late (a lagging feed, a draft date, a re-dated edit) was skipped for good."""
    emails = world.add_subscribers(3)
    store = world.store
    store.reports.upsert_reports([report(1, world.clock() - timedelta(hours=1))])
    world.run("e1", fetch=False)
    world.clock.advance(timedelta(hours=1))
    store.reports.upsert_reports(
        [report(2, world.clock() - timedelta(days=9)), report(3, world.clock() - timedelta(days=400))]
    )
    world.run("e2", fetch=False)
    world.check("e2", expected=emails)
    got = received_reports(world.sink.messages())
    assert {e: sorted(got[e]) for e in emails} == {e: [1, 2, 3] for e in emails}


def test_reports_over_max_reports_go_in_the_next_digests_and_editions_say_so(world):
    """Regression: with more new reports than digest.max_reports the rest were never sent."""
    world.configure(digest_max_reports=3)
    store = world.store
    store.reports.upsert_reports(
        [report(0, world.clock() - timedelta(days=1))]
    )  # the backlog before they joined
    emails = world.add_subscribers(2)
    store.reports.upsert_reports([report(n, world.clock() - timedelta(hours=10 - n)) for n in range(1, 8)])
    first = world.run("e1", fetch=False)
    shown = flat(world.cli("editions", str(first.edition.id)).output)
    assert "2 readers have reports carried to their next digest (8 in all)" in shown
    world.run("e2", fetch=False)
    world.run("e3", fetch=False)
    assert world.run("e4", fetch=False).edition.status is EditionStatus.SKIPPED
    got = received_reports(world.sink.messages())
    assert {e: sorted(got[e]) for e in emails} == {e: list(range(1, 8)) for e in emails}
    assert sorted(len(received_reports([m])[m.rcpt_tos[0]]) for m in world.sink.messages()) == [
        1,
        1,
        3,
        3,
        3,
        3,
    ]


def test_preview_says_what_is_carried_to_the_next_digest(world):
    world.configure(digest_max_reports=2)
    world.store.reports.upsert_reports([report(0, world.clock() - timedelta(days=1))])
    (email,) = world.add_subscribers(1)
    world.store.reports.upsert_reports([report(n, world.clock() - timedelta(hours=n)) for n in range(1, 6)])
    out = flat(world.cli("preview", "--no-fetch", "--subscriber", email).output)
    assert "3 more carried to the next digest (digest.max_reports is 2)" in out


def test_a_scheduled_edition_during_a_stalled_manual_one_mails_nobody_the_same_reports_twice(world):
    """Regression: a scheduled edition started while a manual one was stalled (SMTP down)
    planned from the same watermark and mailed its reports again; resuming the first then
    mailed a second copy with another Message-ID."""
    emails = world.add_subscribers(6)
    world.store.reports.upsert_reports(
        [report(1, world.clock() - timedelta(hours=2)), report(2, world.clock() - timedelta(hours=1))]
    )
    stalled = [world.sink.faults.add(FaultRule(stage="rcpt", code=451, to=e)) for e in emails[:4]]
    manual = world.run("manual-1", fetch=False)
    assert manual.edition.counts.get("deferred") == 4
    daily = world.run("daily-1", schedule="daily", cadences=[Cadence.DAILY], fetch=False)
    # The two readers the first edition reached have nothing new; the four it still owes are left out.
    assert daily.edition.status is EditionStatus.SKIPPED
    assert "4 readers wait for an unfinished edition" in daily.edition.reason
    for fault in stalled:
        world.sink.faults.remove(fault)
    world.make_due("manual-1")
    world.service.runner.resume()
    world.check("manual-1", expected=emails)
    got = received_reports(world.sink.messages())
    assert {e: sorted(got[e]) for e in emails} == {e: [1, 2] for e in emails}


# -- the state machine ---------------------------------------------------------------------

TOPICS = ("Cameras", "Access", "Business")
DATE_SHIFTS = st.sampled_from(
    [0, -1, -30, -24 * 40, 5, 24 * 30]
)  # hours: now, late, backdated, a little and far ahead


@dataclass
class Person:
    """One reader as the model knows them: who they are and since when they are owed reports."""

    email: str
    identity: int  # bumped when removed and added again: a new person at the same address
    since_seq: int  # owed reports stored after this (joined, came back, or changed topics)
    topics: tuple[str, ...] = ()
    cadence: Cadence = Cadence.DAILY
    active: bool = True
    got: list[int] = field(default_factory=list)


class LedgerMachine(RuleBasedStateMachine):
    """Random interleavings of report arrivals, sends, outages, crashes and reader changes."""

    def __init__(self, tmp_path_factory: Any, sink: Any, database: Any = None) -> None:
        super().__init__()
        self.sink = sink
        sink.clear()
        sink.faults.clear()
        tmp = tmp_path_factory.mktemp("ledger")
        self.clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        self.database = database
        url = database.create() if database is not None else f"sqlite:///{tmp}/db.sqlite"
        env = service_env(
            tmp,
            smtp_port=sink.port,
            NEWSLETTER_DATABASE_URL=url,
            NEWSLETTER_SMTP_RETRIES="1",
            NEWSLETTER_SMTP_TIMEOUT="2",
            NEWSLETTER_DIGEST_MAX_REPORTS="3",
        )
        self.services = Services(tmp, env, clock=self.clock)
        self.service = self.services.new()
        self.store = self.service.store
        self.reports = 0
        self.editions = 0
        self.people: dict[str, Person] = {}
        self.seen: set[str] = set()
        self.message_editions: dict[str, str] = {}

    def teardown(self) -> None:
        self.sink.faults.clear()
        self.services.close()
        if self.database is not None:
            self.database.drop()

    # -- the world ---------------------------------------------------------------------
    @initialize()
    def backlog(self) -> None:
        self._add_reports([0, -24, -48])

    def _add_reports(self, shifts: list[int], topics: tuple[str, ...] = ()) -> None:
        batch = []
        for shift in shifts:
            self.reports += 1
            chosen = topics or (TOPICS[self.reports % len(TOPICS)],)
            batch.append(report(self.reports, self.clock() + timedelta(hours=shift), chosen))
        self.store.reports.upsert_reports(batch)

    @rule(shifts=st.lists(DATE_SHIFTS, min_size=1, max_size=5))
    def reports_arrive(self, shifts: list[int]) -> None:
        self._add_reports(shifts)

    @rule(hours=st.sampled_from([1, 6, 30]))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))

    @rule()
    def smtp_goes_down(self) -> None:
        if not self.sink.faults.rules:
            self.sink.faults.add(FaultRule(stage="mail", code=421, text="4.3.2 try again later"))

    @rule()
    def smtp_comes_back(self) -> None:
        self.sink.faults.clear()

    # -- readers -----------------------------------------------------------------------
    @rule(n=st.integers(0, 5), topics=st.lists(st.sampled_from(TOPICS), max_size=2, unique=True))
    def reader_signs_up(self, n: int, topics: list[str]) -> None:
        email = f"reader{n}@example.org"
        if email in self.people:
            return
        subscriber, _ = add_subscriber(self.store, email, topics=topics)
        self.people[email] = Person(email, 0, self.store.reports.newest_seq(), tuple(topics))

    @rule(data=st.data())
    def reader_unsubscribes(self, data: st.DataObject) -> None:
        person = self._pick(data, active=True)
        if person is not None:
            self.store.subscribers.set_status(
                self._id(person), SubscriberStatus.UNSUBSCRIBED, reason="one click"
            )
            person.active = False

    @rule(data=st.data())
    def reader_comes_back(self, data: st.DataObject) -> None:
        person = self._pick(data, active=False)
        if person is not None:
            self.store.subscribers.set_status(self._id(person), SubscriberStatus.ACTIVE, reason="reactivated")
            person.active, person.since_seq = True, self.store.reports.newest_seq()

    @rule(data=st.data())
    def reader_is_removed_and_added_again(self, data: st.DataObject) -> None:
        person = self._pick(data)
        if person is not None:
            self.store.subscribers.remove_subscriber(person.email)
            add_subscriber(self.store, person.email, topics=person.topics)
            self.people[person.email] = Person(
                person.email, person.identity + 1, self.store.reports.newest_seq(), person.topics
            )

    @rule(
        data=st.data(),
        topics=st.lists(st.sampled_from(TOPICS), max_size=2, unique=True),
        weekly=st.booleans(),
    )
    def reader_changes_preferences(self, data: st.DataObject, topics: list[str], weekly: bool) -> None:
        person = self._pick(data, active=True)
        if person is not None:
            cadence = Cadence.WEEKLY if weekly else Cadence.DAILY
            self.store.subscribers.update_preferences(
                self._id(person), topics=topics, cadence=cadence, paused=False
            )
            person.topics, person.cadence, person.since_seq = (
                tuple(topics),
                cadence,
                self.store.reports.newest_seq(),
            )

    # -- operators and the scheduler -----------------------------------------------------
    @rule()
    def manual_send(self) -> None:
        self.editions += 1
        self.service.runner.run(key=f"manual-{self.editions}", fetch=False)

    @rule(cadence=st.sampled_from([Cadence.DAILY, Cadence.WEEKLY]))
    def scheduled_fire(self, cadence: Cadence) -> None:
        self.editions += 1
        self.service.runner.run(
            key=f"{cadence.value}-{self.editions}",
            schedule=cadence.value,
            cadences=[cadence],
            as_of=self.clock(),
            fetch=False,
        )

    @rule()
    def operator_resumes(self) -> None:
        self.service.runner.resume()

    @rule()
    def scheduler_upkeep(self) -> None:
        self.service.runner.upkeep()

    @rule()
    def a_sender_dies_holding_rows(self) -> None:
        """What a SIGKILL leaves: rows claimed by a process of this host that is gone."""
        for edition in self.store.editions.list_editions(statuses=[EditionStatus.SENDING], limit=3):
            self.store.outbox.claim_deliveries(edition.id, limit=2, worker=f"{socket.gethostname()}:999999")

    # -- what must hold ------------------------------------------------------------------
    @invariant()
    def nobody_gets_a_report_twice(self) -> None:
        self._take_messages()
        for person in self.people.values():
            assert len(person.got) == len(set(person.got)), (person.email, sorted(person.got))

    @invariant()
    def a_message_id_belongs_to_one_edition(self) -> None:
        for m in self.sink.messages():
            edition = str(parse(m.raw)["X-Newsletter-Edition"])
            message_id = str(parse(m.raw)["Message-ID"])
            assert self.message_editions.setdefault(message_id, edition) == edition

    def calm(self) -> None:
        """Let the world calm down: the server back, retries due, every edition finished,
        then editions until nobody has anything left (overflow takes several)."""
        self.sink.faults.clear()
        for _ in range(12):
            self.clock.advance(timedelta(days=2))
            while self.service.runner.resume() is not None:
                pass
            self.editions += 1
            result = self.service.runner.run(key=f"calm-{self.editions}", fetch=False)
            if result.edition.status is EditionStatus.SKIPPED:
                break
        unfinished = self.store.editions.list_editions(
            statuses=[EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED], limit=50
        )
        assert unfinished == [], [(e.key, e.status, e.counts) for e in unfinished]
        for edition in self.store.editions.list_editions(limit=1000):
            assert set(edition.counts) <= {
                s.value
                for s in (
                    DeliveryState.SENT,
                    DeliveryState.FAILED,
                    DeliveryState.SUPPRESSED,
                    DeliveryState.UNKNOWN,
                )
            }, edition
        self.nobody_gets_a_report_twice()
        stored = {
            r.seq: r for r in self.store.reports.ledger_reports(after=0, upto=self.store.reports.newest_seq())
        }
        for person in self.people.values():
            subscriber = self.store.subscribers.find_subscriber(person.email)
            if not person.active or subscriber is None or subscriber.status is not SubscriberStatus.ACTIVE:
                continue  # left, or suppressed by bounces: owed nothing more
            owed = {
                int(r.id.split("-")[1])
                for seq, r in stored.items()
                if seq > person.since_seq and (not person.topics or set(r.topics) & set(person.topics))
            }
            missing = owed - set(person.got)
            assert not missing, (person.email, sorted(missing), sorted(person.got))

    # -- helpers -------------------------------------------------------------------------
    def _pick(self, data: st.DataObject, *, active: bool | None = None) -> Person | None:
        candidates = sorted(
            (p for p in self.people.values() if active is None or p.active is active), key=lambda p: p.email
        )
        return data.draw(st.sampled_from(candidates)) if candidates else None

    def _id(self, person: Person) -> int:
        subscriber = self.store.subscribers.find_subscriber(person.email)
        assert subscriber is not None
        return subscriber.id

    def _take_messages(self) -> None:
        """Credit each newly stored message to the person its recipient is now."""
        for m in self.sink.messages():
            if m.id in self.seen:
                continue
            self.seen.add(m.id)
            person = self.people.get(m.rcpt_tos[0])
            assert person is not None, m.rcpt_tos
            person.got.extend(received_reports([m])[m.rcpt_tos[0]])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_reader_gets_every_report_exactly_once_whatever_happens(tmp_path_factory, sink, backend):
    """Stateful property, bounded and derandomized for `make test`, on SQLite and (where the test
    server is set, as in CI) on PostgreSQL. The long run, by hand:
    LEDGER_EXAMPLES=2000 LEDGER_RANDOM=1 .venv/bin/python -m pytest tests/delivery/test_ledger.py -k whatever
    """
    server = pg_server_url()
    if backend == "postgresql" and not server:
        pytest.skip(f"{PG_URL_VAR} is not set: no PostgreSQL server to test against (CI sets it)")

    class Machine(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(
                tmp_path_factory,
                sink,
                ScratchDatabase(server) if backend == "postgresql" and server else None,
            )

        def teardown(self) -> None:
            try:
                self.calm()
            finally:
                super().teardown()

    examples = int(os.environ.get("LEDGER_EXAMPLES", "10"))
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=20,
            deadline=None,
            database=None,
            derandomize=not os.environ.get("LEDGER_RANDOM"),
            suppress_health_check=list(HealthCheck),
        ),
    )
