"""The console's tables and queries on PostgreSQL: sign in, a token, the audit log, the paged views."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from newsletter.admin.app import create_console
from tests.factories import Services, pg_server_url, service_env
from tests.pg.conftest import pg_admin, pg_url  # the fresh-database fixtures of tests/pg

from .helpers import Operator, make_users

__all__ = ["pg_admin", "pg_url"]

pytestmark = pytest.mark.skipif(
    not pg_server_url(),
    reason="NEWSLETTER_TEST_DATABASE_URL is not set: no PostgreSQL server to test against (CI sets it)",
)


def test_console_on_postgresql(pg_url: str, tmp_path: Path, sink: Any) -> None:
    services = Services(tmp_path, service_env(tmp_path, smtp_port=sink.port, NEWSLETTER_DATABASE_URL=pg_url))
    try:
        service = services.new()
        service.runner.ingest()
        for i in range(60):
            service.store.subscribers.add_subscriber(email=f"pg{i:02}@example.org")
        make_users(service)
        with TestClient(create_console(service, dev=True), follow_redirects=False) as client:
            console = Operator(service, client.app, client)  # type: ignore[arg-type]
            assert console.login("editor@console.example.org").status_code == 303
            page = client.get("/admin/readers", params={"q": "PG0", "page": "1"})
            assert "10 readers match" in page.text
            made = console.post("/admin/tokens/new", {"name": "pg"}, csrf_from="/admin/tokens")
            token = re.search(r'id="new-token">([^<]+)<', made.text)
            assert token
            listing = client.get(
                "/api/v1/readers",
                params={"per_page": 50, "page": 2},
                headers={"Authorization": f"Bearer {token.group(1)}"},
            ).json()
            assert listing["total"] == 60 and len(listing["items"]) == 10
            assert client.get("/admin/").status_code == 200
            actions = [e.action for e in service.store.accounts.audit_entries()]
            assert "login" in actions and "token.create" in actions
    finally:
        services.close()
