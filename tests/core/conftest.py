"""Fixtures for the core tests: a real in-process SMTP sink, settings built from an explicit
environment, and a Service on a SQLite file in tmp_path."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.config import SAMPLE_SUBSCRIBERS, Settings, load_settings
from newsletter.service import Service
from newsletter.sink.server import SinkServer
from newsletter.subscriptions import import_file

TEST_KEY = "test-key"


@pytest.fixture
def sink(smtp_sink: SinkServer) -> SinkServer:
    """The project's SMTP sink (the `smtp_sink` fixture of newsletter.sink.pytest_plugin):
    a real aiosmtpd server on a free loopback port, storing into a fresh Maildir."""
    return smtp_sink


@pytest.fixture
def base_env(tmp_path: Path, sink: SinkServer) -> dict[str, str]:
    return {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(sink.port),
        "NEWSLETTER_SECRET_KEY": TEST_KEY,
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(tmp_path / "journal"),
        "NEWSLETTER_REPORTS_SETTLE": "0",
        "NEWSLETTER_DELIVERY_RETRY_DELAY": "0.01",
    }


@pytest.fixture
def make_settings(tmp_path: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings from base_env plus overrides; run in tmp_path so no ./newsletter.toml is read."""
    monkeypatch.chdir(tmp_path)

    def build(**overrides: str) -> Settings:
        return load_settings(env={**base_env, **overrides})

    return build


@pytest.fixture
def make_service(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def build(**overrides: str) -> Service:
        service = Service(make_settings(**overrides))
        services.append(service)
        return service

    yield build
    for service in services:
        service.close()


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
