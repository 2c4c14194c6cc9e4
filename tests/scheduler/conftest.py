"""Fixtures for the scheduler tests: a fake clock, feeds written relative to it, a real
in-process SMTP sink, and Services on one SQLite file (or PostgreSQL when
NEWSLETTER_TEST_DATABASE_URL is set, for the store-level tests)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
import sqlalchemy as sa

from newsletter.config import load_settings
from newsletter.models import Cadence, Edition
from newsletter.service import Service
from newsletter.subscriptions import add_subscriber
from tests.factories import FakeClock


@dataclass
class FeedItem:
    slug: str
    published: datetime
    title: str = ""


def write_feed(path: Path, items: list[FeedItem]) -> None:
    parts = ['<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>',
             "<title>VSN test</title><link>https://example.com/</link><description>t</description>"]
    for it in items:
        parts.append(
            f"<item><title>{escape(it.title or 'Report ' + it.slug)}</title>"
            f"<link>https://example.com/reports/{it.slug}</link><guid>urn:test:{it.slug}</guid>"
            f"<pubDate>{format_datetime(it.published.astimezone(timezone.utc))}</pubDate>"
            "<description>A teaser.</description></item>"
        )
    parts.append("</channel></rss>")
    path.write_text("".join(parts), encoding="utf-8")


@pytest.fixture
def mail_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The sink team's `smtp_sink` fixture when its plugin is installed, else the same server started here."""
    try:
        yield request.getfixturevalue("smtp_sink")
        return
    except pytest.FixtureLookupError:
        pass
    from newsletter.sink.server import SinkServer

    server = SinkServer(maildir=tmp_path / "maildir", smtp_port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class World:
    """One deployment under test: settings env, feed file, subscribers, the Services built."""

    tmp: Path
    env: dict[str, str]
    feed: Path
    sink: Any
    services: list[Service] = field(default_factory=list)

    def service(self, **overrides: str) -> Service:
        service = Service(load_settings(env={**self.env, **overrides}))
        self.services.append(service)
        return service

    def subscribe(self, service: Service, email: str, cadence: Cadence = Cadence.DAILY) -> None:
        subscriber, _ = add_subscriber(service.store, email)
        if cadence is not Cadence.DAILY:
            service.store.subscribers.update_preferences(subscriber.id, topics=(), cadence=cadence, paused=False)

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
def world(tmp_path: Path, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)  # no ./newsletter.toml from the checkout is read
    feed = tmp_path / "feed.xml"
    write_feed(feed, [])
    env = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(mail_sink.port),
        "NEWSLETTER_SECRET_KEY": "test",
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(tmp_path / "journal"),
        "NEWSLETTER_REPORTS_FEED": str(feed),
    }
    w = World(tmp_path, env, feed, mail_sink)
    yield w
    for service in w.services:
        service.close()


# -- databases for the store-level tests -------------------------------------------------

PG_URL = os.environ.get("NEWSLETTER_TEST_DATABASE_URL", "")
DATABASES = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a throwaway schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.sqlite"
        return
    schema = f"sched_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


Clock = Callable[[], datetime]
