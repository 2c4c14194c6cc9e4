"""The confirmed count on PostgreSQL: the audience is counted as planning chooses (the same SQL groups),
a stale count is refused before anything is written, and the confirmed count is the count sent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from newsletter.admin.app import create_console
from tests.factories import Services, pg_server_url, rss, service_env
from tests.pg.conftest import pg_admin, pg_url  # the fresh-database fixtures of tests/pg

from .helpers import Operator, make_users
from .test_admin_confirmed_count import ACCESS, CAMERAS

__all__ = ["pg_admin", "pg_url"]

pytestmark = pytest.mark.skipif(
    not pg_server_url(),
    reason="NEWSLETTER_TEST_DATABASE_URL is not set: no PostgreSQL server to test against (CI sets it)",
)


def test_api_send_plans_exactly_the_confirmed_count_on_postgresql(
    pg_url: str, tmp_path: Path, sink: Any
) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(rss([CAMERAS]), encoding="utf-8")
    env = service_env(
        tmp_path, smtp_port=sink.port, NEWSLETTER_DATABASE_URL=pg_url, NEWSLETTER_REPORTS_FEED=str(feed)
    )
    services = Services(tmp_path, env)
    try:
        service = services.new()
        service.store.subscribers.add_subscriber(email="cam@example.org", topics=["Cameras"])
        for i in range(5):
            service.store.subscribers.add_subscriber(email=f"access{i}@example.org", topics=["Access"])
        make_users(service)
        app = create_console(service, dev=True)
        with TestClient(app, follow_redirects=False) as client:
            console = Operator(service, app, client)
            console.login("editor@console.example.org")
            made = console.post("/admin/tokens/new", {"name": "pg"}, csrf_from="/admin/tokens")
            token = re.search(r'id="new-token">([^<]+)<', made.text)
            assert token
            auth = {"Authorization": f"Bearer {token.group(1)}"}
            audience = client.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth)
            assert audience.json()["readers"] == 1
            feed.write_text(rss([CAMERAS, *ACCESS]), encoding="utf-8")
            stale = client.post("/api/v1/send", json={"schedule": "manual", "confirm_count": 1}, headers=auth)
            assert stale.status_code == 409 and "from 1 to 6 readers" in stale.json()["error"]
            assert sink.messages() == [] and all(not e.counts for e in service.store.editions.list_editions())
            sent = client.post("/api/v1/send", json={"schedule": "manual", "confirm_count": 6}, headers=auth)
            assert sent.status_code == 202, sent.text
            app.state.console.engine.wait_idle()
            assert service.store.editions.get_edition(sent.json()["id"]).counts == {"sent": 6}
            assert len(sink.messages()) == 6
    finally:
        services.close()
