"""One pause for every sender, and a deliberate stop that stays stopped.

Regressions: `newsletter send` stopped with SIGTERM was resumed minutes later by the
scheduler's upkeep and mailed the rest with nobody asking; there was no `newsletter pause`;
the plain progress overshot ("5,007 of 4,964 done") when a deferred row was tried again in
the run; `editions ID` printed every failing domain (589 lines).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

from newsletter.models import EditionStatus
from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import flat


def start_send(world: Any, key: str, *, after: int) -> subprocess.Popen[str]:
    """A real `newsletter send --key KEY` in a subprocess, returned once the sink holds ``after`` messages."""
    reached = threading.Event()

    def on_message(_m: Any) -> None:
        if len(world.sink.store) >= after:
            reached.set()

    world.sink.on_message = on_message
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}, **world.env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "--key", key],
        cwd=world.tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reached.wait(60), "the send never started"
    world.sink.on_message = None
    return proc


def test_a_send_stopped_by_sigterm_stays_paused_through_upkeep_until_an_operator_resumes_it(world):
    emails = world.add_subscribers(60)
    world.configure(smtp_connections=1, delivery_batch_size=5)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.05))
    proc = start_send(world, "e1", after=5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    stopped = world.edition("e1")
    assert stopped.status is EditionStatus.PAUSED and stopped.reason.startswith("stopped by SIGTERM at "), (
        stopped
    )
    assert "It is paused (stopped by SIGTERM at" in flat(out)
    sent = len(world.sink.messages())
    assert 0 < sent < 60 and stopped.counts.get("pending", 0) > 0 and "sending" not in stopped.counts

    world.sink.faults.clear()
    world.clock.advance(timedelta(minutes=10))
    assert world.service.runner.upkeep() == []  # what the scheduler inside `newsletter serve` runs
    assert len(world.sink.messages()) == sent and world.edition("e1").status is EditionStatus.PAUSED
    # A scheduled fire of the same key does not take it up either; only an operator's resume does.
    assert "is paused" in world.run("e1").message and len(world.sink.messages()) == sent

    resumed = world.cli("resume")
    assert resumed.exit_code == 0, resumed.output
    world.check("e1", expected=emails)  # every reader exactly once
    done = world.edition("e1")
    assert done.status is EditionStatus.SENT and done.reason == ""
    history = [(e.action, e.detail) for e in world.store.accounts.audit_entries(target="e1")]
    assert [a for a, _ in history] == ["edition.resume", "edition.pause"]
    assert history[1][1].startswith("stopped by SIGTERM at ")


def test_newsletter_pause_stops_a_send_running_elsewhere_at_its_next_batch(world):
    emails = world.add_subscribers(60)
    world.configure(smtp_connections=1, delivery_batch_size=5)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.05))
    proc = start_send(world, "e1", after=5)
    paused = world.cli("pause", "e1", "--reason", "wrong subject")
    assert paused.exit_code == 0, paused.output
    assert "Resume it with: newsletter resume e1" in flat(paused.output)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "stopped: the edition is paused now" in flat(out)
    edition = world.edition("e1")
    assert edition.status is EditionStatus.PAUSED and "wrong subject" in edition.reason
    assert edition.counts.get("pending", 0) > 0 and "sending" not in edition.counts
    sent = len(world.sink.messages())
    assert edition.counts.get("sent") == sent < 60  # stopped at its next batch, nothing unrecorded
    assert world.cli("pause", "e1").exit_code == 1  # already paused: one line saying so
    world.sink.faults.clear()
    assert world.cli("resume", "e1").exit_code == 0
    world.check("e1", expected=emails)


def test_plain_progress_counts_a_row_tried_twice_in_the_run_once(world, monkeypatch):
    import newsletter.cli.sending as sending

    monkeypatch.setattr(sending, "PROGRESS_EVERY", 0.0)  # a line per result: the cadence is not tested
    emails = world.add_subscribers(20)
    # Batches of 5: the sender claims again while the run goes on, and takes up the greylisted rows.
    world.configure(smtp_connections=1, smtp_retries=0, delivery_backoff="1", delivery_batch_size=5)
    world.sink.faults.add(FaultRule(stage="rcpt", action="reply", code=450, times=3))
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.02))

    def time_passes(_m: Any) -> None:
        world.clock.advance(timedelta(seconds=2))  # the greylisted rows come due within the run

    world.sink.on_message = time_passes
    out = world.cli("send", "--key", "e1")
    world.sink.on_message = None
    assert out.exit_code == 0, out.output
    world.check("e1", expected=emails)
    assert world.edition("e1").counts == {"sent": 20}  # the 3 greylisted rows were sent in this run
    lines = [line for line in out.output.splitlines() if line.startswith("sending: ")]
    assert lines and lines[-1] == "sending: 20 of 20 done", lines[-3:]
    assert all(int(line.split()[1]) <= 20 for line in lines)


def test_editions_id_lists_the_ten_domains_with_most_failures_and_counts_the_rest(world):
    for i in range(15):
        world.add_subscribers(1 + (i == 0), prefix=f"r{i}", domain=f"d{i:02}.example")
    world.sink.faults.add(FaultRule(stage="rcpt", action="reply", code=550, text="5.1.1 No such user"))
    world.run("e1")
    out = world.cli("editions", str(world.edition("e1").id))
    assert out.exit_code == 0, out.output
    text = out.output
    domains = [line for line in text.splitlines() if "× hard" in line]
    assert len(domains) == 10 and "2 × hard      d00.example" in domains[0], domains
    assert "and 5 more domains (5 failures)" in flat(text)
