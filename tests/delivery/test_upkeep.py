"""Editions left unfinished are finished by the scheduler's upkeep and by workers."""

from __future__ import annotations

import socket

import pytest

from newsletter.admin.engine import ConsoleEngine
from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import flat


def test_plan_only_then_a_resume_sends_every_row_once(world):
    emails = world.add_subscribers(30)
    out = world.cli("send", "--key", "e1", "--plan-only")
    assert out.exit_code == 0, out.output
    assert "planned 30 rows" in flat(out.output)
    assert world.sink.messages() == []
    assert world.edition("e1").status.value == "sending"

    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 30}
    assert world.edition("e1").status.value == "sent"


def test_workers_on_sqlite_are_refused_with_one_line_instead_of_half_working(world):
    """A worker beside a send on SQLite mailed one Message-ID twice to 500 readers: refused now."""
    world.add_subscribers(5)
    assert world.cli("send", "--key", "e1", "--plan-only").exit_code == 0
    out = world.cli("worker", "--once")
    assert out.exit_code == 1
    assert "Error: workers need PostgreSQL: this database is SQLite" in out.output
    assert "Traceback" not in out.output
    assert world.sink.messages() == [] and world.edition("e1").counts == {"pending": 5}


def test_scheduler_upkeep_finishes_an_edition_a_dead_sender_left(world):
    emails = world.add_subscribers(12)
    out = world.cli("send", "--key", "e1", "--plan-only")
    assert out.exit_code == 0, out.output
    # A sender on this machine (a pid that is not running) claimed four rows and died before
    # any result was committed: its claim is what the outbox's own claim writes.
    dead = world.store.outbox.claim_deliveries(
        world.edition("e1").id, limit=4, worker=f"{socket.gethostname()}:999999"
    )
    assert len(dead) == 4 and world.edition("e1").counts == {"pending": 8, "sending": 4}
    service = world.service
    done = service.runner.upkeep()
    assert done == ["e1"]
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 12}
    assert world.edition("e1").status.value == "sent"
    # Nothing left: a second look does nothing.
    assert service.runner.upkeep() == []


def test_a_run_that_stops_midway_leaves_untried_rows_pending_and_resumes_cleanly(world):
    world.configure(smtp_connections=2)
    emails = world.add_subscribers(80)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.01))
    seen = []

    class OperatorStop(KeyboardInterrupt):
        pass

    def stop_after_ten(outcome):
        seen.append(outcome)
        if len(seen) == 10:
            raise OperatorStop()  # what Ctrl-C does to the main thread

    with pytest.raises(OperatorStop):
        world.run("e1", on_outcome=stop_after_ten)
    counts = world.store.editions.delivery_counts(world.edition("e1").id)
    assert counts.get("sending", 0) == 0, counts  # nothing is left claimed by the stopped run
    sent_before = counts.get("sent", 0)
    assert 10 <= sent_before < 80 and counts.get("pending", 0) == 80 - sent_before
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 80}
    assert len(world.sink.messages()) == 80  # nobody got two copies


def test_a_worker_that_read_the_edition_before_it_was_paused_leaves_it_paused(world):
    """Regression: a worker listed an edition as sending, an operator paused it in the console a
    moment later, and the worker's drain set it back to sending and mailed every reader."""
    world.add_subscribers(6)
    assert world.cli("send", "--key", "e1", "--plan-only").exit_code == 0
    seen_by_worker = world.edition("e1")
    assert seen_by_worker.status.value == "sending"
    console = ConsoleEngine(world.service)
    console.pause(seen_by_worker.id, by="ops@example.org")

    result = world.service.runner.drain(seen_by_worker)

    assert result.tally == {} and "paused" in result.message
    assert world.sink.messages() == []
    paused = world.edition("e1")
    assert paused.status.value == "paused" and paused.reason.startswith("paused by ops@example.org at ")
    assert paused.counts == {"pending": 6}


def test_a_pause_in_the_console_stops_a_worker_draining_the_edition_at_its_next_batch(world):
    """Regression: the console may pause an edition no sender holds the lock of, which is what
    workers drain; they went on claiming batches to the end, and the edition ended "sent" under
    the operator's pause."""
    world.configure(smtp_connections=1, delivery_batch_size=5)
    emails = world.add_subscribers(60)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.02))
    assert world.cli("send", "--key", "e1", "--plan-only").exit_code == 0
    edition = world.edition("e1")
    console = ConsoleEngine(world.service)
    sent: list[int] = []

    def pause_after_ten(outcome):
        sent.append(outcome.delivery_id)
        if len(sent) == 10:
            console.pause(edition.id, by="ops@example.org")

    result = world.service.runner.drain(edition, on_outcome=pause_after_ten)

    assert result.message.startswith("stopped: the edition is paused now (paused by ops@example.org at ")
    stopped = world.edition("e1")
    assert stopped.status.value == "paused" and stopped.reason.startswith("paused by ops@example.org at ")
    # The batch in flight at the pause finishes; nothing after it is claimed.
    assert 10 <= stopped.counts["sent"] <= 20 and stopped.counts["pending"] == 60 - stopped.counts["sent"]
    assert stopped.counts.keys() == {"sent", "pending"}

    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    assert world.check("e1", expected=emails).states() == {"sent": 60}
    assert len(world.sink.messages()) == 60  # nobody got two copies
