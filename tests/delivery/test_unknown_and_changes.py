"""A connection lost after the data (unknown outcome), and subscribers who leave while an
edition is being sent."""

from __future__ import annotations

import threading

import pytest

from newsletter.models import SubscriberStatus
from newsletter.sink.faults import FaultRule
from newsletter.storage.store import Store
from tests.delivery.helpers import flat


@pytest.mark.parametrize("action", ["drop_after_store", "drop", "timeout"])
def test_connection_lost_after_data_leaves_the_row_unknown(world, action):
    # The rule stays active: a sender that retried an unknown row within the run would
    # make the sink store a second copy. "timeout": the final reply comes after
    # smtp.timeout (whether a server keeps such a message is up to it).
    world.configure(smtp_retries=2, smtp_timeout=0.5)
    emails = world.add_subscribers(6)
    victim = emails[3]
    if action == "timeout":
        rule = world.sink.faults.add(FaultRule(stage="data", action="delay", delay=1.0, to=victim))
    else:
        rule = world.sink.faults.add(FaultRule(stage="data", action=action, to=victim))
    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 5, "unknown": 1}
    row = checked.row(victim)
    assert "connection lost after the message data was sent" in row.last_reply
    assert world.sink.faults.fired(rule) == 1, "an unknown outcome is not retried blindly"
    copies = checked.by_row.get(row.id, [])
    assert len(copies) == {"drop_after_store": 1, "drop": 0}.get(action, len(copies)) <= 1
    if copies:
        assert copies[0].headers["Message-ID"] == row.message_id
    assert world.store.subscribers.find_subscriber(victim).status.value == "active"
    assert result.edition.status.value == "sent"

    # A resume (or rerun of the key) never sends it again with another Message-ID.
    world.sink.faults.clear()
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    world.run("e1")
    again = world.check("e1", expected=emails)
    assert again.row(victim).message_id == row.message_id
    assert len(again.by_row.get(row.id, [])) <= 1 + len(copies)


@pytest.mark.parametrize("status", [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED])
def test_subscriber_leaving_during_the_send_is_never_mailed(world, status):
    world.configure(smtp_connections=2)
    emails = world.add_subscribers(60)
    leavers = emails[-8:]
    # Slow server: 30 ms per message over 2 connections, about a second in all.
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.03))
    other = Store(
        world.settings().database.url, clock=world.clock
    )  # another process (the web app), same time
    changed = threading.Event()

    def leave() -> None:
        world.sink.wait_for(count=1, timeout=20)  # the send is under way
        for email in leavers:
            other.subscribers.set_status(
                other.subscribers.find_subscriber(email).id, status, reason="left during the send"
            )
        changed.set()

    thread = threading.Thread(target=leave)
    thread.start()
    try:
        world.run("e1")
    finally:
        thread.join(timeout=30)
        other.dispose()
    assert changed.is_set()
    checked = world.check("e1", expected=emails, never=leavers)
    assert checked.states() == {"sent": 52, "suppressed": 8}
    assert {r.email for r in checked.rows if r.state == "suppressed"} == set(leavers)
    assert world.edition("e1").status.value == "sent"


def test_operator_can_resend_unknown_rows_with_the_same_message_id(world):
    world.configure(smtp_retries=0)
    emails = world.add_subscribers(4)
    victim = emails[1]
    # "drop": the sink keeps nothing, the sender sees the connection die after the data.
    world.sink.faults.add(FaultRule(stage="data", action="drop", to=victim, times=1))
    world.run("e1")
    first = world.check("e1", expected=emails)
    assert first.states() == {"sent": 3, "unknown": 1}
    message_id = first.row(victim).message_id
    assert not world.sink.messages(to=victim)

    out = world.cli("send", "--retry-unknown")
    assert out.exit_code != 0 and "--resume" in out.output

    out = world.cli("send", "--resume", "--retry-unknown")
    assert out.exit_code == 0, out.output
    assert "1 rows of edition e1 whose outcome was unknown will be sent again" in flat(out.output)
    after = world.check("e1", expected=emails)
    assert after.states() == {"sent": 4}
    [copy] = world.sink.messages(to=victim)
    assert copy.headers["Message-ID"] == message_id
    assert world.edition("e1").status.value == "sent"
