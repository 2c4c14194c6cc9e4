"""Where the console runs: beside the subscriber pages in `newsletter serve`, or alone on admin.port."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from newsletter.admin.mount import WithConsole, with_console
from newsletter.web.app import create_app

from .helpers import make_users


def test_serve_mounts_the_console_under_admin_and_api_beside_the_subscriber_pages(make_service: Any) -> None:
    service = make_service()
    service.runner.ingest()
    make_users(service)
    site, alone = with_console(create_app(service), service, dev=True)
    assert alone is None and isinstance(site, WithConsole)
    with TestClient(site, follow_redirects=False) as client:
        assert "Get Video Surveillance News In Your Inbox" in client.get("/").text  # the subscriber app
        assert client.get("/admin/").headers["location"] == "/admin/login"
        assert client.get("/admin/login").status_code == 200
        assert client.get("/api/v1/editions").status_code == 401
        assert client.get("/archive").status_code == 200  # not taken by the console
        assert (
            "Page not found" in client.get("/administrator").text
        )  # the subscriber app's 404: only /admin and /admin/... are the console's


def test_admin_port_gives_the_console_its_own_listener(make_service: Any) -> None:
    service = make_service(NEWSLETTER_ADMIN_PORT="8081")
    make_users(service)
    site, alone = with_console(create_app(service), service, dev=True)
    assert alone is not None
    with TestClient(site, follow_redirects=False) as client:
        assert client.get("/admin/login").status_code == 404  # not on the public listener
    with TestClient(alone, follow_redirects=False) as client:
        assert client.get("/admin/login").status_code == 200
