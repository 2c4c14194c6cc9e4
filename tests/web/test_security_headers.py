"""One security-header middleware for the site and the console, each with its own policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from newsletter.admin.accounts import Accounts
from newsletter.admin.app import create_console
from newsletter.admin.security import console_headers
from newsletter.web.headers import SecurityHeaders


async def page(request: Request) -> Response:
    # A handler's own value of a security header is replaced, never doubled.
    return PlainTextResponse("ok", headers={"Referrer-Policy": "unsafe-url", "Cache-Control": "max-age=60"})


def client(wrap: type[SecurityHeaders] | object) -> TestClient:
    app: ASGIApp = Starlette(routes=[Route("/{path:path}", page)])
    return TestClient(wrap(app))  # type: ignore[operator]


SITE = [
    ("/", "DENY", "frame-ancestors 'none'"),
    ("/archive/7", "DENY", "style-src 'unsafe-inline'"),
    ("/embed", None, "style-src 'self'"),
]
CONSOLE = [
    ("/admin", "DENY", "script-src 'self'"),
    ("/admin/editions/3/frame", "SAMEORIGIN", "frame-ancestors 'self'"),
    ("/api/v1/docs", "DENY", "https://unpkg.com"),
]


@pytest.mark.parametrize(("path", "frame_options", "in_csp"), SITE)
def test_the_site_headers(path: str, frame_options: str | None, in_csp: str) -> None:
    headers = client(SecurityHeaders).get(path).headers
    assert headers.get("x-frame-options") == frame_options
    assert in_csp in headers["content-security-policy"]
    assert ("frame-ancestors" in headers["content-security-policy"]) is (frame_options is not None)
    assert headers.get_list("referrer-policy") == ["no-referrer"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "max-age=60"  # the site leaves caching to each route


@pytest.mark.parametrize(("path", "frame_options", "in_csp"), CONSOLE)
def test_the_console_headers(path: str, frame_options: str, in_csp: str) -> None:
    headers = client(console_headers).get(path).headers
    assert headers.get_list("x-frame-options") == [frame_options]
    assert in_csp in headers["content-security-policy"]
    assert headers.get_list("referrer-policy") == ["same-origin"]
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cross-origin-opener-policy"] == "same-origin"


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


def test_the_console_500_page_carries_the_headers_too(make_service: Any) -> None:
    """Regression: the console's headers were a user middleware, inside Starlette's
    ServerErrorMiddleware, so its 500 page went out with no CSP, no framing rule and no no-store."""
    service = make_service()
    Accounts(service.store.accounts, idle=timedelta(hours=1)).create_user(
        "ops@example.org", role="admin", password="a long enough password"
    )
    console = create_console(service)
    console.router.routes.insert(0, Route("/admin/boom", boom))
    page = TestClient(console, raise_server_exceptions=False).get("/admin/boom")
    assert page.status_code == 500
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
