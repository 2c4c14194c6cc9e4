"""The console and the API pause a send they did not start: `newsletter send` in another process.

Regression: the console refused to pause a send run by the CLI or the scheduler ("cannot
interrupt"), and kept a second pause of its own for the sends it started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from newsletter.admin.app import create_console
from newsletter.models import EditionStatus
from newsletter.sink.faults import FaultRule

from .helpers import Operator, make_users

READERS = 40
SLOW = {"NEWSLETTER_SMTP_CONNECTIONS": "1", "NEWSLETTER_DELIVERY_BATCH_SIZE": "5"}


def wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def cli_send(make_service: Any, base_env: dict[str, str], sink: Any, tmp_path: Path) -> Any:
    """A console over READERS readers, and `newsletter send --key e1` running in a subprocess."""
    service = make_service(**SLOW)
    service.runner.ingest()
    readers = [f"reader{i:02}@example.org" for i in range(READERS)]
    for email in readers:
        service.store.subscribers.add_subscriber(email=email)
    make_users(service)
    sink.faults.add(FaultRule(stage="data", action="delay", delay=0.05))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | base_env | SLOW
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "--key", "e1", "--no-fetch"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    app = create_console(service, dev=True)
    with TestClient(app, follow_redirects=False) as client:
        console = Operator(service, app, client)
        console.login("editor@console.example.org")
        try:
            yield console, proc, readers
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
            app.state.console.engine.wait_idle()


def sent_once(sink: Any, readers: list[str]) -> None:
    delivered = Counter(m.rcpt_tos[0] for m in sink.messages())
    assert sorted(delivered) == readers and set(delivered.values()) == {1}, delivered


def started(console: Operator) -> int:
    store = console.service.store
    edition = wait_until(lambda: store.editions.find_edition("e1"))
    wait_until(lambda: store.editions.get_edition(edition.id).counts.get("sent", 0) >= 3)
    return int(edition.id)


def stopped_by_pause(console: Operator, proc: Any, edition_id: int, by: str) -> None:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "stopped: the edition is paused now" in " ".join(out.split())
    paused = console.service.store.editions.get_edition(edition_id)
    assert paused.status is EditionStatus.PAUSED and paused.reason.startswith(f"paused by {by}")
    assert 0 < paused.counts.get("sent", 0) < READERS and "sending" not in paused.counts
    time.sleep(0.3)
    assert console.service.store.editions.get_edition(edition_id).counts == paused.counts


def test_the_console_pauses_a_cli_send_and_its_resume_mails_the_rest_once(cli_send: Any, sink: Any) -> None:
    console, proc, readers = cli_send
    edition_id = started(console)
    r = console.post(f"/admin/editions/{edition_id}/pause", csrf_from=f"/admin/editions/{edition_id}")
    assert r.status_code == 303, r.text
    stopped_by_pause(console, proc, edition_id, "editor@console.example.org at ")
    page = console.client.get(f"/admin/editions/{edition_id}").text
    assert "paused by editor@console.example.org at " in page and 'data-when="paused">' in page

    r = console.post(f"/admin/editions/{edition_id}/resume", csrf_from=f"/admin/editions/{edition_id}")
    assert r.status_code == 303
    store = console.service.store
    wait_until(lambda: store.editions.get_edition(edition_id).status is EditionStatus.SENT, timeout=60)
    console.engine.wait_idle()
    sent_once(sink, readers)
    done = store.editions.get_edition(edition_id)
    assert done.reason == "" and done.finished_at is not None
    progress = console.client.get("/admin/progress.json", params={"id": str(edition_id)}).json()
    [live] = progress["editions"]
    assert live["status"] == "sent" and live["reason"] == "" and live["done"] == READERS == live["total"]
    assert live["finished"] == done.finished_at.strftime("%Y-%m-%d %H:%M:%S")
    audit = [(e.action, e.actor) for e in store.accounts.audit_entries(target="e1")]
    assert audit == [
        ("edition.resume", "editor@console.example.org"),
        ("edition.pause", "editor@console.example.org"),
    ]


def test_the_api_pauses_a_cli_send_and_resumes_it(cli_send: Any, sink: Any) -> None:
    console, proc, readers = cli_send
    made = console.post("/admin/tokens/new", {"name": "ci"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    edition_id = started(console)
    r = console.client.post(f"/api/v1/editions/{edition_id}/pause", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    stopped_by_pause(console, proc, edition_id, "editor@console.example.org (API) at ")
    again = console.client.post(f"/api/v1/editions/{edition_id}/pause", headers=auth)
    assert again.status_code == 400 and "paused" in again.text
    r = console.client.post(f"/api/v1/editions/{edition_id}/resume", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "sending", r.text
    store = console.service.store
    wait_until(lambda: store.editions.get_edition(edition_id).status is EditionStatus.SENT, timeout=60)
    console.engine.wait_idle()
    sent_once(sink, readers)
