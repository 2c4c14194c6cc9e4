"""Fixtures for the scheduler tests: a deployment on the shared factories with a feed file
of its own, and a throwaway database on SQLite or PostgreSQL for the store-level tests.

The scheduler runs with the production defaults for settle time and retries: only the
database, the sink, the key, the journal and the feed come from the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from newsletter.models import Cadence, Edition
from newsletter.service import Service
from tests.factories import FakeClock, Services, pg_server_url, service_env, subscribe, write_rss


@dataclass
class World:
    """One deployment under test: settings env, feed file, the sink, the Services built."""

    tmp: Path
    feed: Path
    sink: Any
    services: Services = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        return self.services.env

    def service(self, *, clock: FakeClock | None = None, **overrides: str) -> Service:
        return self.services.new(clock=clock, **overrides)

    def subscribe(self, service: Service, email: str, cadence: Cadence = Cadence.DAILY) -> None:
        subscribe(service.store, email, cadence)

    def editions(self, service: Service) -> list[Edition]:
        return sorted(service.store.editions.list_editions(limit=1000), key=lambda e: e.id)

    def received(self) -> list[tuple[str, str]]:
        """(recipient, X-Newsletter-Edition) for every message the sink holds."""
        out = []
        for message in self.sink.messages():
            parsed = BytesParser(policy=policy.default).parsebytes(message.raw)
            for rcpt in message.rcpt_tos:
                out.append((rcpt, str(parsed["X-Newsletter-Edition"])))
        return sorted(out)


@pytest.fixture
def world(tmp_path: Path, sink: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)  # no ./newsletter.toml from the checkout is read
    feed = write_rss(tmp_path / "feed.xml", [])
    env = service_env(
        tmp_path,
        smtp_port=sink.port,
        NEWSLETTER_REPORTS_FEED=str(feed),
        NEWSLETTER_REPORTS_SETTLE=None,  # the production default
        NEWSLETTER_DELIVERY_RETRY_DELAY=None,
    )
    services = Services(tmp_path, env)
    yield World(tmp_path, feed, sink, services)
    services.close()


# -- databases for the store-level tests -------------------------------------------------

DATABASES = ["sqlite"] + (["postgresql"] if pg_server_url() else [])


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a throwaway schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.sqlite"
        return
    pg_url = pg_server_url()
    assert pg_url is not None
    schema = f"sched_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
