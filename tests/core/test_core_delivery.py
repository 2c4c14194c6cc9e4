"""Delivery through the sink with injected SMTP faults; every test asserts the invariants
of README "Delivery guarantees", with one subscriber unsubscribed before the send."""

from __future__ import annotations

import pytest

from newsletter.models import DeliveryState, EditionStatus, SubscriberStatus
from newsletter.sink.faults import FaultRule
from tests.factories import utc
from tests.invariants import check_delivery, parse

AS_OF = utc(2018, 8, 22)
GONE = "tom.brandt@example.net"  # unsubscribed before every send below


@pytest.fixture
def service(make_service):
    """The sample subscribers (small digests keep rendering cheap), one of them unsubscribed."""
    from newsletter.config import SAMPLE_SUBSCRIBERS
    from newsletter.subscriptions import import_file

    service = make_service(NEWSLETTER_DIGEST_MAX_REPORTS="2")
    assert import_file(service.store, SAMPLE_SUBSCRIBERS).added == 8
    store = service.store
    assert store.subscribers.set_status(
        store.subscribers.find_subscriber(GONE).id, SubscriberStatus.UNSUBSCRIBED, reason="test"
    )
    return service


def run(service, sink, key="k"):
    result = service.runner.run(key=key, as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition, never=[GONE])
    return result, inv


def test_clean_send(service, sink):
    result, inv = run(service, sink)
    assert result.edition.status is EditionStatus.SENT
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}
    assert len(inv.rows) == 7 and GONE not in inv.by_email
    assert result.tally == {"sent": 7}


def test_5xx_at_rcpt_fails_that_row_and_the_others_are_sent(service, sink):
    rule = sink.faults.add(
        FaultRule(stage="rcpt", code=550, text="5.1.1 No such user", to="priya.raman@example.org")
    )
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1  # a permanent failure is not retried
    failed = inv.by_email["priya.raman@example.org"]
    assert failed.state is DeliveryState.FAILED
    assert "priya.raman@example.org" not in inv.messages_by_rcpt
    assert {r.email for r in inv.rows if r.state is DeliveryState.SENT} == set(inv.by_email) - {
        "priya.raman@example.org"
    }
    assert len(inv.messages_by_rcpt) == 6
    assert result.edition.status is EditionStatus.SENT
    replies = service.store.outbox.failure_replies(result.edition.id)
    assert replies and replies[0][0] == 550 and "No such user" in replies[0][1]


def test_4xx_once_defers_the_row_at_once_and_the_others_are_sent(service, sink):
    # Not retried within the run: its later attempt is the retry policy's
    # (tests/delivery/test_greylisting.py).
    rule = sink.faults.add(FaultRule(stage="rcpt", code=451, to="marcus.oyelaran@example.net", times=1))
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1
    row = inv.by_email["marcus.oyelaran@example.net"]
    assert row.state is DeliveryState.DEFERRED and row.next_attempt_at is not None
    assert "marcus.oyelaran@example.net" not in inv.messages_by_rcpt
    assert {r.state for r in inv.rows if r is not row} == {DeliveryState.SENT}
    assert result.edition.status is EditionStatus.SENDING


def test_4xx_at_data_once_defers_the_row_at_once(service, sink):
    rule = sink.faults.add(FaultRule(stage="data", code=452, to="ellen.hartley@example.org", times=1))
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1
    assert inv.by_email["ellen.hartley@example.org"].state is DeliveryState.DEFERRED
    assert "ellen.hartley@example.org" not in inv.messages_by_rcpt


@pytest.mark.parametrize("stage", ["mail", "rcpt"])
def test_dropped_connection_before_data_is_retried(service, sink, stage):
    kwargs = {"to": "jose.nunez@example.net"} if stage == "rcpt" else {}
    rule = sink.faults.add(FaultRule(stage=stage, action="drop", times=1, **kwargs))
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}
    assert all(len(v) == 1 for v in inv.messages_by_rcpt.values())
    assert len(inv.messages_by_rcpt) == 7
    assert result.edition.status is EditionStatus.SENT


def test_421_closing_connection_is_retried(service, sink):
    rule = sink.faults.add(FaultRule(stage="mail", code=421, times=2))
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 2
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}
    assert len(inv.messages_by_rcpt) == 7


def test_persistent_4xx_defers_the_row_and_keeps_the_edition_open(service, sink):
    rule = sink.faults.add(FaultRule(stage="rcpt", code=450, to="kenji.watanabe@example.org"))
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1, "a 4xx is not retried within the run"
    assert inv.by_email["kenji.watanabe@example.org"].state is DeliveryState.DEFERRED
    assert result.edition.status is EditionStatus.SENDING
    assert "deferred" in result.message
    assert service.store.outbox.next_due(result.edition.id) is not None
    # the others are all sent
    assert sum(1 for r in inv.rows if r.state is DeliveryState.SENT) == 6


def test_connection_lost_after_data_makes_the_row_unknown_not_resent(service, sink):
    rule = sink.faults.add(
        FaultRule(stage="data", action="drop_after_store", to="dana.whitfield@example.org", times=1)
    )
    result, inv = run(service, sink)
    assert sink.faults.fired(rule) == 1
    assert inv.by_email["dana.whitfield@example.org"].state is DeliveryState.UNKNOWN
    # the sink stored it once; the sender did not send a second copy in this run
    assert len(inv.messages_by_rcpt["dana.whitfield@example.org"]) == 1
    others = [r for r in inv.rows if r.email != "dana.whitfield@example.org"]
    assert {r.state for r in others} == {DeliveryState.SENT}


def test_rerun_after_faults_never_sends_a_row_twice(service, sink):
    sink.faults.add(FaultRule(stage="rcpt", code=550, to="priya.raman@example.org"))
    run(service, sink)
    before = len(sink.messages())
    sink.faults.clear()
    again = service.runner.run(key="k", as_of=AS_OF)
    assert not again.created
    assert len(sink.messages()) == before
    check_delivery(service.store, service.signer, sink.messages(), again.edition, never=[GONE])


def test_envelope_sender_is_verp_and_not_the_subscriber(service, sink):
    _, inv = run(service, sink)
    for _rcpt, (m,) in inv.messages_by_rcpt.items():
        assert m.mail_from.startswith("bounces+") and m.mail_from.endswith("@example.com")
        assert str(parse(m.raw)["From"]).endswith("<news@example.com>")


def test_several_connections_and_small_batches(make_service, sink):
    """Many recipients over 3 connections with batch size 7: every row once, in one state."""
    from newsletter.subscriptions import add_subscriber

    service = make_service(NEWSLETTER_SMTP_CONNECTIONS="3", NEWSLETTER_DELIVERY_BATCH_SIZE="7")
    for i in range(40):
        add_subscriber(service.store, f"reader{i:02d}@example.org", topics="China" if i % 2 else "")
    gone = service.store.subscribers.find_subscriber("reader05@example.org")
    service.store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED)
    sink.faults.add(FaultRule(stage="rcpt", code=550, to="reader1*@example.org"))
    result = service.runner.run(key="many", as_of=AS_OF)
    inv = check_delivery(
        service.store, service.signer, sink.messages(), result.edition, never=["reader05@example.org"]
    )
    assert len(inv.rows) == 39
    failed = {r.email for r in inv.rows if r.state is DeliveryState.FAILED}
    assert failed == {f"reader1{i}@example.org" for i in range(10)}
    assert len(inv.messages_by_rcpt) == 29
    assert len(service.store.editions.list_variants(result.edition.id)) == 2


class Interrupted(Exception):
    pass


def test_interrupted_edition_resumes_and_sends_every_row_once(service, sink):
    """A sender that dies after planning (some rows claimed, none sent) is finished by
    running the same key again: each row sent once, with the Message-ID planned for it."""
    store = service.store
    planned_ids: dict[str, str] = {}

    def die(_total: int) -> None:
        edition = store.editions.find_edition("k")
        claimed = store.outbox.claim_deliveries(edition.id, limit=3)  # a sender that died mid-batch
        assert len(claimed) == 3
        planned_ids.update({r.email: r.message_id for r in store.outbox.list_deliveries(edition.id)})
        raise Interrupted

    with pytest.raises(Interrupted):
        service.runner.run(key="k", as_of=AS_OF, on_planned=die)
    assert sink.messages() == []
    edition = store.editions.find_edition("k")
    assert edition.status is not EditionStatus.SENT
    assert store.editions.delivery_counts(edition.id).get("sending") == 3
    result = service.runner.run(key="k", as_of=AS_OF)
    assert not result.created
    assert result.edition.status is EditionStatus.SENT
    inv = check_delivery(store, service.signer, sink.messages(), result.edition, never=[GONE])
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}
    assert all(len(v) == 1 for v in inv.messages_by_rcpt.values()) and len(inv.messages_by_rcpt) == 7
    assert {r.email: r.message_id for r in inv.rows} == planned_ids
