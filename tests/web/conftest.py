"""Fixtures for the web tests: a real Service on a SQLite file, mail into the in-process sink (smtp_sink);
``live``: the app under uvicorn for the browser tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from newsletter.service import Service
from newsletter.web.app import create_app
from newsletter.web.ratelimit import Limit, RateLimits
from tests.factories import FakeClock

from .helpers import Web, make_settings


@pytest.fixture
def make_web(tmp_path: Path, smtp_sink: Any) -> Iterator[Callable[..., Web]]:
    """Build apps sharing one database and sink; each with its own limits or signer."""
    opened: list[tuple[TestClient, Service]] = []

    def build(
        *,
        limits: RateLimits | None = None,
        service: Service | None = None,
        client: tuple[str, int] = ("198.51.100.7", 50000),
        clock: FakeClock | None = None,
    ) -> Web:
        if service is None:
            service = Service(make_settings(tmp_path, smtp_port=smtp_sink.port), clock=clock)
            service.runner.ingest()  # the sample feed's reports give the topic choices
        app = create_app(
            service, limits=limits or RateLimits(per_client=Limit(1000, 600), per_target=Limit(1000, 3600))
        )
        test_client = TestClient(app, client=client, follow_redirects=False)
        test_client.__enter__()
        opened.append((test_client, service))
        return Web(service, app, test_client, smtp_sink)

    yield build
    for test_client, service in opened:
        test_client.__exit__(None, None, None)
        service.close()


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


@pytest.fixture
def live(tmp_path: Path, smtp_sink: Any) -> Iterator[tuple[str, Service]]:
    """The app under uvicorn on a free loopback port, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Bound and listening before uvicorn starts: early connections wait in the backlog, no polling needed.
    sock.listen(64)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = Service(make_settings(tmp_path, smtp_port=smtp_sink.port, base_url=base_url))
    service.runner.ingest()
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base_url, service
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        service.close()
