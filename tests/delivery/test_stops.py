"""Stopping a send with Ctrl-C or SIGTERM, and a test send to one inbox.

Regressions: Ctrl-C printed only "Aborted!" (no summary, no resume hint, the bar over-counted),
SIGTERM stopped without a word; to see a digest in a real inbox an operator had to add themself
as a subscriber.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from newsletter.models import EditionStatus
from newsletter.sink.faults import FaultRule
from tests.delivery.helpers import flat
from tests.invariants import parse


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_stopped_send_says_what_it_did_and_how_to_resume_then_resumes_without_repeats(
    world, sig, code, name
):
    emails = world.add_subscribers(60)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.05))
    reached = threading.Event()

    def on_message(_m: Any) -> None:
        if len(world.sink.store) >= 5:
            reached.set()

    world.sink.on_message = on_message
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}, **world.env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "--key", "e1"],
        cwd=world.tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reached.wait(60), "the send never started"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    world.sink.on_message = None
    assert proc.returncode == code, (out, err)
    text = flat(out)
    assert f"Stopped by {name}: edition e1" in text and "Resume it with: newsletter send --resume" in text, (
        text
    )
    assert "Traceback" not in err and "Aborted!" not in out + err
    counts = world.edition("e1").counts
    assert "sending" not in counts and counts.get("pending", 0) > 0, counts  # untried rows handed back
    world.sink.faults.clear()
    resumed = world.cli("send", "--resume")
    assert resumed.exit_code == 0, resumed.output
    world.check("e1", expected=emails)


def test_send_test_to_mails_one_inbox_as_a_reader_would_get_it_and_writes_no_edition(world):
    emails = world.add_subscribers(3)
    out = world.cli("send", "--test-to", "editor@example.com", "--as", emails[1])
    assert out.exit_code == 0, out.output
    assert "sent to editor@example.com" in flat(out.output)
    (message,) = world.sink.messages()
    assert message.rcpt_tos == ("editor@example.com",)
    mail = parse(message.raw)
    assert str(mail["Subject"]).startswith("[Test] ")
    text = mail.get_body(("plain",)).get_content()
    # The real message, but its personal links and envelope carry test tokens: they change nothing.
    token = str(mail["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
    assert world.signer.is_test(token) and f"/preferences/{token}" in text
    assert message.mail_from.startswith(f"bounces+{token}@")
    assert world.store.editions.list_editions(limit=5) == []
    assert world.cli("send", "--test-to", "editor@example.com", "--resume").exit_code == 2


def test_an_unwritable_journal_directory_is_one_line_with_a_hint_and_sends_nothing(world):
    """Regression: an unwritable delivery.journal_dir ended in a traceback."""
    emails = world.add_subscribers(3)
    blocker = world.tmp / "not-a-directory"
    blocker.write_text("a file where the journal directory should be", encoding="utf-8")
    world.configure(delivery_journal_dir=str(blocker / "journal"))
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 1
    text = flat(out.output)
    assert "Error: cannot write the send journal in" in text and "Hint: Set delivery.journal_dir" in text
    assert "Traceback" not in out.output
    assert world.sink.messages() == [] and world.edition("e1").counts == {"pending": 3}
    world.configure(delivery_journal_dir=str(world.tmp / "journal"))
    assert world.cli("send", "--resume").exit_code == 0
    world.check("e1", expected=emails)


def test_a_paused_edition_that_is_sending_again_shows_no_finish_time(world):
    """Regression: `editions` showed 'sending' beside the finish time the pause had written."""
    world.add_subscribers(1)
    edition = world.run("e1", send=False).edition
    store = world.store
    store.editions.set_edition_status(edition.id, EditionStatus.PAUSED, reason="paused by the breaker")
    assert store.editions.get_edition(edition.id).finished_at is not None
    store.editions.set_edition_status(edition.id, EditionStatus.SENDING, reason="")
    assert store.editions.get_edition(edition.id).finished_at is None


def test_without_a_terminal_a_send_prints_plain_progress_lines(world, monkeypatch):
    """Regression: without a terminal (cron, logs) nothing printed until the end."""
    import newsletter.cli.sending as sending

    monkeypatch.setattr(
        sending, "PROGRESS_EVERY", 0.05
    )  # the cadence, shortened: what is printed is the product's
    world.add_subscribers(20)
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.02))
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("sending: ")]
    assert lines and lines[-1].endswith("of 20 done"), out.output
