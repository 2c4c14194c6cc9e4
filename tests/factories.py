"""Factories and test doubles every test package shares (real implementations, no mocks).

- ``SECRET_KEY``: the one signing key of every test;
- ``service_env`` / ``settings_from_env`` / ``build_settings``: settings built from an
  explicit environment and an empty config file, so neither the developer's environment
  nor ./newsletter.toml leaks in;
- ``Services``: Services built from one environment (and clock), all closed at the end;
- ``Item`` / ``rss`` / ``write_rss``: RSS feeds written on the fly;
- ``add_subscribers`` / ``subscribe`` / ``bulk_subscribers``: subscribers;
- ``FakeClock``: a settable "now" for Service, Store, runner, scheduler and mailer.

The fixtures built on these live in tests/conftest.py; the delivery invariants in
tests/invariants.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from newsletter.config import Settings, load_settings
from newsletter.models import Cadence, SubscriberStatus
from newsletter.service import Service
from newsletter.storage.schema import subscribers
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber

SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
PG_URL_VAR = "NEWSLETTER_TEST_DATABASE_URL"


def pg_server_url() -> str | None:
    """The test PostgreSQL server (``NEWSLETTER_TEST_DATABASE_URL``), or None when it is not set."""
    return os.environ.get(PG_URL_VAR) or None


class ScratchDatabase:
    """A fresh PostgreSQL database per example on the test server, dropped after it."""

    def __init__(self, server: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        self.server = make_url(server)
        self.admin = sa.create_engine(self.server.set(database="postgres"), isolation_level="AUTOCOMMIT")
        self.name = ""

    def create(self) -> str:
        import secrets

        import sqlalchemy as sa

        self.name = f"nl_scratch_{secrets.token_hex(6)}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.server.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        import sqlalchemy as sa

        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()  # one per example in long runs: hold no server connection between them


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- time --------------------------------------------------------------------------------


class FakeClock:
    """A settable, thread-safe "now" (aware UTC); the scheduler and the runner read it."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


# -- settings and services ---------------------------------------------------------------


def service_env(tmp_path: Path, *, smtp_port: int, **overrides: str | None) -> dict[str, str]:
    """The environment of a service under test: a SQLite file and a journal in ``tmp_path``,
    mail to ``smtp_port`` on loopback, the shared key, no settle time, fast in-run retries.

    ``overrides`` are NEWSLETTER_* variables; None removes one (its built-in default applies).
    """
    env = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(smtp_port),
        "NEWSLETTER_SECRET_KEY": SECRET_KEY,
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(tmp_path / "journal"),
        "NEWSLETTER_REPORTS_SETTLE": "0",
        "NEWSLETTER_DELIVERY_RETRY_DELAY": "0.01",
    }
    return merge_env(env, overrides)


def merge_env(env: Mapping[str, str], overrides: Mapping[str, object | None]) -> dict[str, str]:
    """``env`` with ``overrides`` applied (values as strings; None removes the variable)."""
    merged = dict(env)
    for name, value in overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    return merged


def settings_from_env(tmp_path: Path, env: Mapping[str, str]) -> Settings:
    """The one way tests build Settings: exactly ``env`` plus an empty config file."""
    config = tmp_path / "empty.toml"
    if not config.exists():
        config.write_text("", encoding="utf-8")
    return load_settings(config, env=dict(env))


def build_settings(tmp_path: Path, *, smtp_port: int = 1, **overrides: str | None) -> Settings:
    """``settings_from_env(service_env(...))`` for tests that need Settings and nothing else."""
    return settings_from_env(tmp_path, service_env(tmp_path, smtp_port=smtp_port, **overrides))


class Services:
    """Services built from one base environment, optionally on one clock; ``close`` closes them all."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str], *, clock: FakeClock | None = None) -> None:
        self.tmp_path = tmp_path
        self.env = dict(env)
        self.clock = clock
        self.built: list[Service] = []

    def settings(self, **overrides: str | None) -> Settings:
        return settings_from_env(self.tmp_path, merge_env(self.env, overrides))

    def new(self, *, clock: FakeClock | None = None, **overrides: str | None) -> Service:
        service = Service(self.settings(**overrides), clock=clock or self.clock)
        self.built.append(service)
        return service

    def close(self) -> None:
        for service in self.built:
            service.close()
        self.built.clear()


# -- feeds -------------------------------------------------------------------------------


@dataclass
class Item:
    """One RSS item. ``guid`` defaults to "test-<slug>"."""

    title: str
    slug: str
    published: datetime
    teaser: str = "A teaser."
    topics: Sequence[str] = ()
    guid: str | None = None
    raw_title: bool = False  # True: title is inserted as XML as is (entities, CDATA)
    raw_teaser: bool = False
    extra: str = ""


def rss(items: Iterable[Item], *, channel_title: str = "Test feed") -> str:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(channel_title)}</title><link>https://example.com/reports/</link><description>t</description>",
    ]
    for it in items:
        title = it.title if it.raw_title else escape(it.title)
        teaser = it.teaser if it.raw_teaser else escape(it.teaser)
        cats = "".join(f"<category>{escape(t)}</category>" for t in it.topics)
        parts.append(
            "<item>"
            f"<title>{title}</title>"
            f"<link>https://example.com/reports/{it.slug}</link>"
            f'<guid isPermaLink="false">{escape(it.guid or "test-" + it.slug)}</guid>'
            f"<pubDate>{format_datetime(it.published.astimezone(UTC))}</pubDate>"
            f"<description>{teaser}</description>{cats}{it.extra}"
            "</item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts) + "\n"


def write_rss(path: Path, items: Iterable[Item]) -> Path:
    path.write_text(rss(items), encoding="utf-8")
    return path


# -- subscribers -------------------------------------------------------------------------


def add_subscribers(store: Store, n: int, *, prefix: str = "user", domain: str = "example.org") -> list[str]:
    """``n`` active subscribers <prefix>0000@<domain>, ... (named "Reader 0", ...); their addresses."""
    emails = []
    for i in range(n):
        subscriber, _ = add_subscriber(store, f"{prefix}{i:04d}@{domain}", name=f"Reader {i}")
        emails.append(subscriber.email)
    return emails


def subscribe(store: Store, email: str, cadence: Cadence = Cadence.DAILY) -> int:
    """One active subscriber (all topics) on ``cadence``; its id."""
    subscriber, _ = add_subscriber(store, email)
    if cadence is not Cadence.DAILY:
        store.subscribers.update_preferences(subscriber.id, topics=(), cadence=cadence, paused=False)
    return int(subscriber.id)


def bulk_subscribers(store: Store, count: int, *, domain: str = "example.org") -> None:
    """Insert ``count`` active subscribers reader000000@<domain>, ... (all topics) in a few
    multi-row INSERTs: setup speed for thousands of rows, stamped by the store's clock."""
    now = store.clock()
    rows = [
        {
            "email": f"reader{i:06d}@{domain}",
            "name": f"Reader {i}",
            "status": SubscriberStatus.ACTIVE.value,
            "topics": [],
            "cadence": Cadence.DAILY.value,
            "paused": False,
            "created_at": now,
            "confirmed_at": now,
            "updated_at": now,
            "status_reason": "",
        }
        for i in range(count)
    ]
    with store.engine.begin() as conn:
        # Multi-row statements, not executemany: SQLite's search index flushes once per statement.
        for start in range(0, len(rows), 500):
            conn.execute(subscribers.insert().values(rows[start : start + 500]))
