"""One-click unsubscribe performed as a provider would, against a tiny real web app."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from sink_samples import build, wire
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.sink.errors import OneClickError
from newsletter.sink.message import StoredMessage
from newsletter.sink.oneclick import perform_one_click
from newsletter.sink.server import SinkServer
from tests.servers import free_port


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class UnsubscribeApp:
    """A stand-in for the project's web app (which will replace it later)."""

    base_url: str
    requests: list[Seen] = field(default_factory=list)


@pytest.fixture
def unsubscribe_app() -> Iterator[UnsubscribeApp]:
    seen: list[Seen] = []

    async def record(request: Request) -> Seen:
        entry = Seen(request.method, request.url.path, dict(request.headers), await request.body())
        seen.append(entry)
        return entry

    async def unsubscribe(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("You are unsubscribed from Video Surveillance News.")

    async def redirecting(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/unsubscribed", status_code=303)

    async def broken(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("boom", status_code=500)

    app = Starlette(
        routes=[
            Route("/u/{token}", unsubscribe, methods=["POST"]),
            Route("/redirect/{token}", redirecting, methods=["POST"]),
            Route("/broken/{token}", broken, methods=["POST"]),
        ]
    )
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # Readiness without sleeping: the socket already listens, so connections queue until served.
    try:
        yield UnsubscribeApp(f"http://127.0.0.1:{port}", seen)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def message_to(url: str, *, post: str | None = "List-Unsubscribe=One-Click") -> bytes:
    return wire(
        build(
            headers={
                "List-Unsubscribe": f"<{url}>, <mailto:unsub@news.example.com>",
                "List-Unsubscribe-Post": post,
            }
        )
    )


def deliver(sink: SinkServer, raw: bytes) -> StoredMessage:
    with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as client:
        client.sendmail("news@news.example.com", ["reader@example.org"], raw)
    return sink.wait_for()[0]


def test_one_click_posts_exactly_like_gmail(sink: SinkServer, unsubscribe_app: UnsubscribeApp) -> None:
    message = deliver(sink, message_to(f"{unsubscribe_app.base_url}/u/tok123"))
    result = sink.one_click(message.id)
    assert result.ok and result.status_code == 200 and not result.redirected
    assert result.body_excerpt == "You are unsubscribed from Video Surveillance News."
    assert result.warnings == ("not https: a provider requires an https URI",)
    [request] = unsubscribe_app.requests
    assert (request.method, request.path) == ("POST", "/u/tok123")
    assert request.body == b"List-Unsubscribe=One-Click"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "cookie" not in request.headers


def test_redirects_are_reported_not_followed(sink: SinkServer, unsubscribe_app: UnsubscribeApp) -> None:
    message = deliver(sink, message_to(f"{unsubscribe_app.base_url}/redirect/tok"))
    result = sink.one_click(message.id)
    assert result.redirected and not result.ok
    assert result.status_code == 303 and result.location == "/unsubscribed"
    assert len(unsubscribe_app.requests) == 1  # the redirect target was never requested
    assert any("redirect" in w for w in result.warnings)


def test_server_errors_are_reported(sink: SinkServer, unsubscribe_app: UnsubscribeApp) -> None:
    message = deliver(sink, message_to(f"{unsubscribe_app.base_url}/broken/tok", post=None))
    result = sink.one_click(message.id)
    assert result.status_code == 500 and not result.ok
    assert any("List-Unsubscribe-Post" in w for w in result.warnings)


def test_unreachable_endpoint_is_an_error_in_the_result(sink: SinkServer) -> None:
    message = deliver(sink, message_to(f"http://127.0.0.1:{free_port()}/u/tok"))
    result = sink.one_click(message.id)
    assert result.status_code is None and result.error and "Connect" in result.error


def test_remote_hosts_need_permission(sink: SinkServer) -> None:
    message = deliver(sink, wire(build()))  # https://news.example.com/...
    with pytest.raises(OneClickError, match="--allow-remote-one-click"):
        sink.one_click(message.id)


def test_remote_https_when_allowed_through_a_pluggable_transport() -> None:
    seen: list[httpx.Request] = []

    def provider_target(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    message = StoredMessage.from_bytes(wire(build()))
    result = perform_one_click(message, allow_remote=True, transport=httpx.MockTransport(provider_target))
    assert result.ok and result.warnings == ()
    assert str(seen[0].url) == "https://news.example.com/u/tok123"
    assert seen[0].content == b"List-Unsubscribe=One-Click"
    plain_http = StoredMessage.from_bytes(
        wire(build(headers={"List-Unsubscribe": "<http://news.example.com/u/1>"}))
    )
    with pytest.raises(OneClickError, match="plain http"):
        perform_one_click(plain_http, allow_remote=True)


def test_nothing_to_click() -> None:
    with pytest.raises(OneClickError, match="no List-Unsubscribe"):
        perform_one_click(StoredMessage.from_bytes(wire(build(headers={"List-Unsubscribe": None}))))
    mailto_only = wire(build(headers={"List-Unsubscribe": "<mailto:u@news.example.com>"}))
    with pytest.raises(OneClickError, match="no http"):
        perform_one_click(StoredMessage.from_bytes(mailto_only))


def test_one_click_through_the_api(maildir: Path, unsubscribe_app: UnsubscribeApp) -> None:
    with SinkServer(maildir=maildir, http_port=0) as sink:
        assert sink.http_url is not None
        local = deliver(sink, message_to(f"{unsubscribe_app.base_url}/u/api"))
        with httpx.Client(
            base_url=sink.http_url, trust_env=False, timeout=15, headers={"X-Sink-Token": sink.token}
        ) as http:
            response = http.post(f"/api/messages/{local.id}/one-click")
            assert response.status_code == 200
            assert response.json()["status_code"] == 200 and response.json()["ok"] is True
            sink.clear()
            remote = deliver(sink, wire(build()))
            refused = http.post(f"/api/messages/{remote.id}/one-click")
            assert refused.status_code == 403 and "--allow-remote-one-click" in refused.json()["error"]
            assert http.post("/api/messages/nope/one-click").status_code == 404
    assert [r.path for r in unsubscribe_app.requests] == ["/u/api"]
