"""The console and the API read the feed, and the count confirmed is the count planned, audited and mailed.

Regressions: on a fresh install the console's preview said "Nothing new" and the audience was 0,
because only a send read the feed; an editor confirmed 108 readers and the send, reading the
feed first, mailed 4,314 while the audit said 108 (through the API: audience 1, confirmed 1,
sent 6). Now preview and audience read the feed through the engine's one fetch, and a send
confirmed for N readers plans N or is refused before it writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from newsletter.admin.app import create_console
from newsletter.models import EditionStatus
from tests.factories import Item, rss

from .helpers import Operator, make_users

DAYS_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
CAMERAS = Item("Camera Report", "camera", DAYS_AGO, topics=["Cameras"])
ACCESS = [
    Item(f"Access Report {i}", f"access-{i}", DAYS_AGO - timedelta(hours=i), topics=["Access"])
    for i in range(2)
]


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    return tmp_path / "feed.xml"


@pytest.fixture
def settle() -> str:
    return "0"  # seconds (reports.settle): the tests' default, no settle window


@pytest.fixture
def editor(make_service: Any, feed: Path, settle: str) -> Iterator[Operator]:
    """A fresh install: the feed holds a Cameras report, nothing is stored yet; one Cameras reader
    and five Access readers; an editor signed in."""
    feed.write_text(rss([CAMERAS]), encoding="utf-8")
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_REPORTS_SETTLE=settle)
    service.store.subscribers.add_subscriber(email="cam@example.org", topics=["Cameras"])
    for i in range(5):
        service.store.subscribers.add_subscriber(email=f"access{i}@example.org", topics=["Access"])
    make_users(service)
    app = create_console(service, dev=True)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        operator = Operator(service, app, client)
        operator.login("editor@console.example.org")
        yield operator
    app.state.console.engine.wait_idle()


def api_auth(editor: Operator) -> dict[str, str]:
    made = editor.post("/admin/tokens/new", {"name": "ci"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    return {"Authorization": f"Bearer {token.group(1)}"}


def reader_marks(editor: Operator) -> list[tuple[str, Any, Any, str]]:
    return sorted(
        (s.email, s.ledger_seq, s.last_digest_at, s.status.value)
        for s in editor.service.store.subscribers.list_subscribers()
    )


def audited_counts(editor: Operator) -> list[int]:
    """The reader count each send's audit entry records ("6 readers", "6 readers (API)")."""
    entries = editor.service.store.accounts.audit_entries()
    return [int(e.detail.split(" readers")[0]) for e in entries if e.action == "edition.send"]


def test_a_fresh_install_previews_and_counts_from_the_feed(editor: Operator) -> None:
    page = editor.client.get("/admin/preview", params={"email": "cam@example.org"})
    assert page.status_code == 200 and "Camera Report" in page.text and "Nothing new" not in page.text
    assert (
        "Camera Report" in editor.client.get("/admin/preview/frame", params={"email": "cam@example.org"}).text
    )
    auth = api_auth(editor)
    audience = editor.client.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth)
    assert audience.json()["readers"] == 1, audience.text
    assert "1 readers" in editor.client.get("/admin/send", params={"schedule": "manual"}).text


def test_console_send_refuses_when_the_feed_changed_the_audience_and_changes_no_reader(
    editor: Operator, feed: Path, sink: Any
) -> None:
    confirm = editor.client.get("/admin/send", params={"schedule": "manual"})
    assert "Yes, send to 1 readers" in confirm.text
    feed.write_text(rss([CAMERAS, *ACCESS]), encoding="utf-8")  # the publisher posts while the editor reads
    before = reader_marks(editor)
    refused = editor.post(
        "/admin/send", {"schedule": "manual", "confirm_count": "1"}, csrf_from="/admin/send?schedule=manual"
    )
    assert refused.status_code == 409, refused.text
    assert "the audience changed from 1 to 6 readers since you confirmed" in refused.text.lower()
    editor.engine.wait_idle()
    assert sink.messages() == [] and reader_marks(editor) == before
    assert all(not e.counts for e in editor.service.store.editions.list_editions())
    assert audited_counts(editor) == []
    again = editor.client.get("/admin/send", params={"schedule": "manual"})
    assert "Yes, send to 6 readers" in again.text
    sent = editor.post(
        "/admin/send", {"schedule": "manual", "confirm_count": "6"}, csrf_from="/admin/send?schedule=manual"
    )
    assert sent.status_code == 303, sent.text
    editor.engine.wait_idle()
    edition = editor.service.store.editions.get_edition(int(sent.headers["location"].rsplit("/", 1)[1]))
    assert edition.status is EditionStatus.SENT and edition.counts == {"sent": 6}
    assert len(sink.messages()) == 6 and audited_counts(editor) == [6]


def test_api_audience_confirmed_and_sent_are_one_number(editor: Operator, feed: Path, sink: Any) -> None:
    editor.service.runner.ingest()  # the Cameras report is stored; the Access ones come later
    feed.write_text(rss([CAMERAS, *ACCESS]), encoding="utf-8")
    auth = api_auth(editor)
    audience = editor.client.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth).json()
    assert audience["readers"] == 6  # read from the feed, as the send will
    started = editor.client.post(
        "/api/v1/send", json={"schedule": "manual", "confirm_count": 6}, headers=auth
    )
    assert started.status_code == 202, started.text
    editor.engine.wait_idle()
    assert editor.service.store.editions.get_edition(started.json()["id"]).counts == {"sent": 6}
    assert len(sink.messages()) == 6 and audited_counts(editor) == [6]


def test_api_send_refuses_a_stale_count_before_writing_anything(
    editor: Operator, feed: Path, sink: Any
) -> None:
    auth = api_auth(editor)
    audience = editor.client.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth).json()
    assert audience["readers"] == 1
    feed.write_text(rss([CAMERAS, *ACCESS]), encoding="utf-8")
    before = reader_marks(editor)
    refused = editor.client.post(
        "/api/v1/send", json={"schedule": "manual", "confirm_count": 1}, headers=auth
    )
    assert refused.status_code == 409 and "from 1 to 6 readers" in refused.json()["error"]
    editor.engine.wait_idle()
    assert sink.messages() == [] and reader_marks(editor) == before and audited_counts(editor) == []


@pytest.mark.parametrize("settle", ["600"])
def test_preview_send_page_and_api_name_the_reports_the_settle_window_holds(
    editor: Operator, feed: Path
) -> None:
    fresh = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    feed.write_text(rss([CAMERAS, Item("Just In", "just-in", fresh, topics=["Cameras"])]), encoding="utf-8")
    held = "1 report waits for the settle window until"
    page = editor.client.get("/admin/preview", params={"email": "cam@example.org"})
    assert "Camera Report" in page.text and held in page.text
    assert held in editor.client.get("/admin/send", params={"schedule": "manual"}).text
    auth = api_auth(editor)
    preview = editor.client.get("/api/v1/preview", params={"email": "cam@example.org"}, headers=auth).json()
    assert preview["reports"] == ["Camera Report"] and held in preview["note"]
    audience = editor.client.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth).json()
    assert audience["held_back"] == 1 and held in audience["note"]
