"""The circuit breaker and the operator view."""

from __future__ import annotations

import re

from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import flat


def test_breaker_pauses_with_reason_and_resume_finishes_without_duplicates(world):
    world.configure(
        smtp_retries=0,
        smtp_connections=2,
        delivery_breaker_window=10,
        delivery_breaker_threshold=0.5,
        delivery_batch_size=10,
    )
    emails = world.add_subscribers(80)
    # The provider starts refusing almost everything (seeded: the same events in every run).
    # (5.3.0, not a 5.7.x policy refusal: a burst of those pauses the domain before the breaker trips.)
    world.sink.faults.add(
        FaultRule(stage="rcpt", code=554, text="5.3.0 Service unavailable", probability=0.9, seed=7)
    )

    result = world.run("e1")
    edition = world.edition("e1")
    assert edition.status.value == "paused"
    assert "paused" in edition.reason and "resume" in edition.reason
    assert result.message == edition.reason
    counts = edition.counts
    assert counts.get("pending", 0) > 0, f"a paused edition leaves rows for the resume: {counts}"
    checked = world.check("e1", final=False, expected=emails)
    assert all(r.state in ("sent", "failed", "pending") for r in checked.rows), checked.states()

    out = world.cli("editions", str(edition.id))
    assert out.exit_code == 0, out.output
    text = flat(out.output)
    assert "paused" in text and "Reason:" in text
    assert f"failed {counts['failed']}" in text and f"pending {counts['pending']}" in text
    assert "Most common failure replies" in text
    assert re.search(rf"{counts['failed']} × 554 rcpt: 5\.3\.0 Service unavailable", text), text

    world.sink.faults.clear()
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    text = flat(out.output)
    assert f"Resuming edition e1 (#{edition.id}, paused)" in text
    assert f"{counts['pending']} pending" in text
    edition = world.edition("e1")
    assert edition.status.value == "sent"
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 80 - counts["failed"], "failed": counts["failed"]}
    assert checked.duplicates == 0
    assert all(world.store.subscribers.find_subscriber(e).status.value == "active" for e in emails), (
        "5.3.0 is soft, below the limit: nobody bounced"
    )


def test_breaker_stops_sending_promptly(world):
    # The breaker looks at the last 10 attempts; once it trips, at most the messages
    # already handed to a connection may still go out -- not the whole claimed batch.
    world.configure(
        smtp_retries=0, smtp_connections=2, delivery_breaker_window=10, delivery_breaker_threshold=0.5
    )
    emails = world.add_subscribers(200)
    # (Not a 5.7.x policy refusal: a burst of those pauses the one domain instead, see test_bounces.)
    rule = world.sink.faults.add(FaultRule(stage="rcpt", code=554, text="5.3.0 Service unavailable"))
    world.run("e1")
    edition = world.edition("e1")
    assert edition.status.value == "paused"
    attempts = world.sink.faults.fired(rule)
    assert attempts <= 10 + 2 * 2, (
        f"{attempts} attempts against a failing server after the breaker tripped at 10"
    )
    assert edition.counts.get("pending", 0) >= 200 - 14
    world.check("e1", final=False, expected=emails)


def test_editions_view_shows_counts_per_state_and_top_replies(world):
    world.configure(smtp_retries=0)
    emails = world.add_subscribers(12)
    world.sink.faults.add(FaultRule(stage="rcpt", code=550, text="5.1.1 No such user", to="re:user000[0-2]@"))
    world.sink.faults.add(FaultRule(stage="data", code=451, text="4.3.0 Try later", to="re:user000[3-4]@"))
    world.sink.faults.add(FaultRule(stage="data", action="drop_after_store", to="user0005@example.org"))
    world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 6, "failed": 3, "deferred": 2, "unknown": 1}
    edition = world.edition("e1")
    out = world.cli("editions", str(edition.id))
    assert out.exit_code == 0, out.output
    lines = [" ".join(line.split()) for line in out.output.splitlines()]
    for state, n in {"sent": 6, "failed": 3, "deferred": 2, "unknown": 1}.items():
        assert f"{state} {n}" in lines, (state, out.output)
    text = flat(out.output)
    top = text.split("Most common failure replies:")[1]
    assert top.index("3 × 550 rcpt: 5.1.1 No such user") < top.index("2 × 451 data: 4.3.0 Try later"), text
    # The list view agrees.
    out = world.cli("editions")
    assert out.exit_code == 0
    assert re.search(r"e1 .*sending", flat(out.output)), out.output
