"""A bounce of a test send changes nothing: its VERP token and Message-ID name no outbox row.

The test send carries a VERP envelope sender like a digest's (``bounces+TOKEN@DOMAIN``), but its
token is a test token, which no bounce can read as a row's; a report about it is kept unmatched.
"""

from __future__ import annotations

from newsletter.models import SubscriberStatus
from tests.invariants import parse

from .reports import dsn, processor


def test_a_bounce_of_a_test_send_is_unmatched_and_changes_no_reader(world):
    emails = world.add_subscribers(3)
    world.run("e1")  # real rows exist, with ids a bounce could name
    world.add_report()
    world.sink.clear()
    out = world.cli("send", "--test-to", "editor@example.com", "--as", emails[1])
    assert out.exit_code == 0, out.output
    (test,) = world.sink.messages()
    assert test.mail_from.startswith("bounces+")
    report = dsn(
        recipient="editor@example.com",
        message_id=str(parse(test.raw)["Message-ID"]),
        action="failed",
        status="5.1.1",
        diagnostic="550 5.1.1 User unknown",
    )
    verdict = processor(world).process(report, envelope_recipients=[test.mail_from])
    assert verdict.action == "unmatched" and verdict.subscriber_id is None
    for email in emails:
        reader = world.store.subscribers.find_subscriber(email)
        assert reader is not None and reader.status is SubscriberStatus.ACTIVE
