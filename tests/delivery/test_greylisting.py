"""Greylisting and other refusals for now: the row goes back to the queue with its own next
attempt from the retry policy and the connection takes the next row; nothing waits in the run.
Asserted on the rows' states and next-attempt times, never on wall time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from newsletter.models import DeliveryState
from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import bounce_count, flat


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_greylisted_rows_are_deferred_at_once_and_a_resume_delivers_each_once(world, stage):
    # Slow in-run pauses and several retries: the old sender slept on each greylisted row here.
    world.configure(smtp_connections=2, smtp_retries=3, delivery_retry_delay=1.0, delivery_backoff="300,900")
    emails = world.add_subscribers(100)
    greylisted = emails[::20]  # 5%
    rules = {
        email: world.sink.faults.add(
            FaultRule(stage=stage, code=450, text="4.7.1 Greylisted, try again later", to=email, times=1)
        )
        for email in greylisted
    }
    started = world.clock()

    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 95, "deferred": 5}, "the greylisted rows were retried in the run"
    message_ids = {}
    for email in greylisted:
        row = checked.row(email)
        assert (row.state, row.attempts, row.last_code) == (DeliveryState.DEFERRED, 1, 450)
        assert row.next_attempt_at == started + timedelta(seconds=300), "its own next attempt: backoff[0]"
        assert world.sink.faults.fired(rules[email]) == 1, "refused once, not tried again in the run"
        assert not checked.by_row.get(row.id)
        message_ids[email] = row.message_id
    assert result.edition.status.value == "sending" and "5 deferred" in result.edition.reason

    # Not due yet: a resume sends nothing early.
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    assert "Resuming edition e1" in flat(out.output)
    assert all(world.check("e1").row(e).attempts == 1 for e in greylisted)

    # The greylisting server now takes them: after the due time a resume delivers each once.
    world.clock.advance(timedelta(seconds=301))
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)  # at most one message per row
    assert checked.states() == {"sent": 100}
    for email in greylisted:
        row = checked.row(email)
        [received] = checked.by_row[row.id]
        assert received.headers["Message-ID"] == row.message_id == message_ids[email]
        assert row.attempts == 2
        assert world.sink.faults.fired(rules[email]) == 1
    assert world.edition("e1").status.value == "sent"
    assert bounce_count(world.store) == 0, "a refusal for now bounces nobody"


def test_a_refused_row_does_not_hold_its_connection(world):
    """One connection, the first row greylisted for good: every other row is sent in the run,
    and the greylisted row was tried once, its next attempt from the policy's first step."""
    world.configure(smtp_connections=1, smtp_retries=3, delivery_retry_delay=5.0, delivery_backoff="60,600")
    emails = world.add_subscribers(8)
    victim = emails[0]
    rule = world.sink.faults.add(FaultRule(stage="rcpt", code=451, text="4.3.0 Try again later", to=victim))
    started = world.clock()
    world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 7, "deferred": 1}
    assert world.sink.faults.fired(rule) == 1
    assert checked.row(victim).next_attempt_at == started + timedelta(seconds=60)

    # Still refused on its later attempt: the next step of the policy, attempts counted.
    world.clock.advance(timedelta(seconds=61))
    world.service.runner.upkeep()
    row = world.check("e1").row(victim)
    assert (row.state, row.attempts, world.sink.faults.fired(rule)) == (DeliveryState.DEFERRED, 2, 2)
    assert row.next_attempt_at == started + timedelta(seconds=61 + 600)
