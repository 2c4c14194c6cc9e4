"""Fixtures every test package shares, built on tests/factories.py.

- ``sink``: the project's SMTP sink (``smtp_sink`` from newsletter.sink.pytest_plugin), a
  real aiosmtpd server on a free loopback port storing into a fresh Maildir;
- ``base_env``: the environment of a service on a SQLite file in tmp_path mailing ``sink``
  (tests/factories.py ``service_env``);
- ``make_service``: Services from ``base_env`` plus overrides, optionally on a FakeClock,
  closed after the test (Settings alone: ``build_settings`` / ``settings_from_env``);
- ``sample_service`` / ``sample_rows``: subscribers/sample.csv loaded / read;
- ``feed_server``: bytes served over real HTTP (tests/servers.py ``FeedServer``).

Packages with needs of their own override or add to these in their conftest.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import SAMPLE_SUBSCRIBERS
from newsletter.service import Service
from newsletter.subscriptions import import_file
from tests.factories import FakeClock, Services, service_env
from tests.servers import FeedServer


@pytest.fixture
def sink(smtp_sink: Any) -> Iterator[Any]:
    """The project's SMTP sink (``smtp_sink`` of newsletter.sink.pytest_plugin)."""
    yield smtp_sink
    smtp_sink.on_message = None
    smtp_sink.faults.clear()
    smtp_sink.pipelining = True


@pytest.fixture
def base_env(tmp_path: Path, sink: Any) -> dict[str, str]:
    return service_env(tmp_path, smtp_port=sink.port)


@pytest.fixture
def make_service(
    tmp_path: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Service]]:
    """make_service(clock=None, **NEWSLETTER_overrides) -> a Service on base_env, closed after the test."""
    monkeypatch.chdir(tmp_path)
    services = Services(tmp_path, base_env)

    def build(*, clock: FakeClock | None = None, **overrides: str | None) -> Service:
        return services.new(clock=clock, **overrides)

    yield build
    services.close()


@pytest.fixture
def sample_service(make_service: Callable[..., Service]) -> Service:
    """A service on a fresh database holding subscribers/sample.csv (all active)."""
    service = make_service()
    result = import_file(service.store, SAMPLE_SUBSCRIBERS)
    assert not result.errors
    return service


@pytest.fixture
def sample_rows() -> list[dict[str, str]]:
    with SAMPLE_SUBSCRIBERS.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """``feed_server.serve(path, body)`` -> the URL where a real HTTP server answers with ``body``."""
    server = FeedServer()
    yield server
    server.close()
