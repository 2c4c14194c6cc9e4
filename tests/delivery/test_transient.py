"""Transient failures: 4xx deferrals with backoff and max age, 421 / refused / timeout
connections, servers that close the connection after N messages."""

from __future__ import annotations

import re
import socket
import threading
from datetime import timedelta

import pytest

from newsletter.models import SubscriberStatus
from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import bounce_count, flat, subscriber_status


class DuringTheFault:
    """Which other recipients the sink stored after ``rule`` fired and before ``victim``'s message.

    Counted on the sink's own thread (``on_message``), where the fault was decided too, so
    the order is exact; ``victim_stored`` is set when the victim's message is stored. The
    others' messages take 20 ms each at the sink, so that work is left for the other
    connection when the fault fires (however late the victim's connection got going).
    """

    def __init__(self, sink, rule: FaultRule, victim: str) -> None:
        self.sink, self.rule, self.victim = sink, rule, victim
        sink.faults.add(
            FaultRule(stage="data", action="delay", delay=0.02, to=f"re:^(?!{re.escape(victim)}$)")
        )
        self.others: list[str] = []
        self.victim_stored = threading.Event()
        sink.on_message = self._stored

    def _stored(self, message) -> None:
        if self.victim in message.rcpt_tos:
            self.victim_stored.set()
        elif self.sink.faults.fired(self.rule) and not self.victim_stored.is_set():
            self.others.extend(message.rcpt_tos)


def assert_backoff(row, seconds: float) -> None:
    assert row.next_attempt_at is not None, "a deferred row needs its next attempt time"
    assert row.updated_at is not None
    delta = (row.next_attempt_at - row.updated_at).total_seconds()
    assert abs(delta - seconds) < 10, f"next attempt {delta:.0f}s after the failure, expected {seconds}s"


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_4xx_defers_with_backoff_and_resume_sends_the_same_message_id(world, stage):
    world.configure(smtp_retries=2, delivery_backoff="300,900,3600")
    emails = world.add_subscribers(6)
    victim = emails[2]
    rule = world.sink.faults.add(FaultRule(stage=stage, code=451, text="4.3.0 Try again later", to=victim))

    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    row = checked.row(victim)
    assert checked.states() == {"sent": 5, "deferred": 1}
    assert (row.state, row.attempts, row.last_code) == ("deferred", 1, 451)
    assert "4.3.0" in row.last_reply
    assert world.sink.faults.fired(rule) == 1, "a 4xx is not retried within the run: deferred at once"
    assert_backoff(row, 300)
    assert result.edition.status.value == "sending" and "deferred" in result.edition.reason
    message_id = row.message_id

    # Not due yet: a resume sends nothing early.
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    assert "Resuming edition e1" in flat(out.output)
    assert world.check("e1").row(victim).attempts == 1
    assert world.sink.faults.fired(rule) == 1

    # Due and still failing: deferred again with the next backoff step, attempts counted.
    world.make_due("e1")
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    row = world.check("e1").row(victim)
    assert (row.state, row.attempts) == ("deferred", 2)
    assert_backoff(row, 900)

    # Due, fault gone: the scheduler's upkeep sends it, with the same Message-ID.
    world.sink.faults.clear()
    world.make_due("e1")
    resumed = world.service.runner.upkeep()
    assert resumed == ["e1"]
    checked = world.check("e1", expected=emails)
    row = checked.row(victim)
    assert (row.state, row.attempts, row.message_id) == ("sent", 3, message_id)
    [received] = checked.by_row[row.id]
    assert received.headers["Message-ID"] == message_id
    assert world.edition("e1").status.value == "sent"
    assert subscriber_status(world.store, victim) == "active"
    assert bounce_count(world.store) == 0, "4xx replies never bounce anyone"


def test_deferral_older_than_max_age_fails(world):
    world.configure(smtp_retries=0, delivery_max_age=3600)
    emails = world.add_subscribers(4)
    victim = emails[0]
    world.sink.faults.add(FaultRule(stage="rcpt", code=450, text="4.2.1 Mailbox busy", to=victim))
    world.run("e1")
    assert world.check("e1").row(victim).state == "deferred"

    # Two hours later the edition is older than delivery.max_age.
    world.clock.advance(timedelta(hours=2))
    world.make_due("e1")
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    row = checked.row(victim)
    assert (row.state, row.last_code) == ("failed", 450)
    assert "max_age" in row.last_reply and "4.2.1" in row.last_reply
    assert world.edition("e1").status.value == "sent"
    assert subscriber_status(world.store, victim) == "active"


def test_expired_deferral_counts_as_soft_bounce(world):
    # suppression.py: "Other permanent failures and deferrals that expired are soft".
    world.configure(smtp_retries=0, delivery_max_age=3600, delivery_soft_bounce_limit=1)
    emails = world.add_subscribers(3)
    victim = emails[0]
    world.sink.faults.add(FaultRule(stage="rcpt", code=450, text="4.2.1 Mailbox busy", to=victim))
    world.run("e1")
    world.clock.advance(timedelta(hours=2))  # the edition is now older than delivery.max_age
    world.make_due("e1")
    world.run("e1")
    world.check("e1")
    assert world.check("e1").row(victim).state == "failed"
    assert bounce_count(world.store) == 1, "the expired deferral is recorded as a soft bounce"
    assert subscriber_status(world.store, victim) == "bounced", "soft_bounce_limit=1 suppresses at the first"


def test_deferred_subscriber_who_leaves_is_suppressed_on_resume(world):
    world.configure(smtp_retries=0)
    emails = world.add_subscribers(3)
    victim = emails[1]
    world.sink.faults.add(FaultRule(stage="data", code=452, to=victim))
    world.run("e1")
    assert world.check("e1").row(victim).state == "deferred"
    world.sink.faults.clear()
    subscriber = world.store.subscribers.find_subscriber(victim)
    world.store.subscribers.set_status(subscriber.id, SubscriberStatus.UNSUBSCRIBED, reason="one-click")
    world.make_due("e1")
    world.run("e1")
    checked = world.check("e1", expected=emails, never=[victim])
    assert checked.row(victim).state == "suppressed"
    assert world.edition("e1").status.value == "sent"


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_421_backs_off_that_connection_while_the_others_go_on(world, stage):
    world.configure(smtp_connections=2, smtp_retries=2, delivery_retry_delay=0.4)
    emails = world.add_subscribers(12)
    victim = emails[0]
    rule = world.sink.faults.add(FaultRule(stage=stage, code=421, to=victim, times=1))
    during = DuringTheFault(world.sink, rule, victim)
    world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 12}
    assert world.sink.faults.fired(rule) == 1
    assert during.victim_stored.is_set()
    # The victim's connection waits delivery.retry_delay (0.4 s) after the 421; a sender that
    # stalled every connection would store nothing in between.
    assert during.others, "the other connection should have gone on during the back-off"
    assert all(subscriber_status(world.store, e) == "active" for e in emails)
    assert bounce_count(world.store) == 0


def test_timeout_backs_off_that_connection_and_nobody_bounces(world):
    world.configure(smtp_connections=2, smtp_retries=2, smtp_timeout=0.5, delivery_retry_delay=0.05)
    emails = world.add_subscribers(12)
    victim = emails[0]
    rule = world.sink.faults.add(FaultRule(stage="rcpt", action="delay", delay=1.5, to=victim, times=1))
    during = DuringTheFault(world.sink, rule, victim)
    world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 12}
    assert world.sink.faults.fired(rule) == 1
    assert during.victim_stored.is_set()
    # The victim's connection waits smtp.timeout (0.5 s) for the delayed reply, then backs off.
    assert during.others, "the other connection should have gone on during the timeout"
    assert bounce_count(world.store) == 0


def test_refused_connection_defers_everyone_and_bounces_nobody(world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    world.configure(smtp_port=closed_port, smtp_retries=1)
    emails = world.add_subscribers(5)
    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"deferred": 5}
    assert all("connect" in r.last_reply for r in checked.rows), [r.last_reply for r in checked.rows]
    assert result.edition.status.value == "sending"
    assert bounce_count(world.store) == 0
    assert all(subscriber_status(world.store, e) == "active" for e in emails)
    ids = {r.email: r.message_id for r in checked.rows}

    # The server is back: the resume delivers every row, each with its Message-ID.
    world.configure(smtp_port=world.sink.port)
    world.make_due("e1")
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 5}
    assert {r.email: r.message_id for r in checked.rows} == ids
    assert world.edition("e1").status.value == "sent"


@pytest.mark.parametrize("close_after", [1, 3])
def test_server_closing_after_n_messages_gets_a_new_connection(world, close_after):
    # smtp.retries=0: reconnecting after the server closed an exhausted connection must
    # not count as a failed try of the next row.
    world.configure(smtp_connections=2, smtp_retries=0)
    emails = world.add_subscribers(20)
    world.sink.faults.close_after = close_after
    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 20}
    assert len(checked.messages) == 20
    assert result.edition.status.value == "sent"
