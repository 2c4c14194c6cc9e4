"""Fixtures for the delivery tests: the real in-process sink (``smtp_sink`` from the
sink's pytest plugin), settings from an explicit environment, services on a SQLite file
in tmp_path, and the operator CLI run in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from newsletter.config import Settings, load_settings
from newsletter.editions.runner import EditionResult
from newsletter.models import Report
from newsletter.service import Service
from newsletter.subscriptions import add_subscriber

from tests.delivery.helpers import Checked, check_invariants

SECRET = "test-key"


class Harness:
    """One test's world: a sink, a database, a journal directory and the env that names them."""

    def __init__(self, tmp_path: Path, sink: Any) -> None:
        self.tmp = tmp_path
        self.sink = sink
        self.env: dict[str, str] = {
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(sink.port) if sink is not None else "1",
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(tmp_path / "journal"),
            "NEWSLETTER_REPORTS_SETTLE": "0",
            "NEWSLETTER_DELIVERY_RETRY_DELAY": "0.01",
            "NEWSLETTER_SMTP_TIMEOUT": "2",
            "NEWSLETTER_SMTP_RETRIES": "1",
            "NEWSLETTER_SMTP_CONNECTIONS": "2",
        }
        self._services: list[Service] = []
        self._main: Service | None = None
        self._report_seq = 0

    # -- configuration -------------------------------------------------------------------
    def configure(self, **overrides: Any) -> None:
        """Change the environment for every later service and CLI call (keys: NEWSLETTER_ suffix)."""
        for key, value in overrides.items():
            self.env[f"NEWSLETTER_{key.upper()}"] = str(value)
        if self._main is not None:
            self._main = None  # rebuilt with the new settings on next use

    def settings(self) -> Settings:
        return load_settings(env=self.env)

    def new_service(self) -> Service:
        service = Service(self.settings())
        self._services.append(service)
        return service

    @property
    def service(self) -> Service:
        if self._main is None:
            self._main = self.new_service()
        return self._main

    @property
    def store(self) -> Any:
        return self.service.store

    @property
    def signer(self) -> Any:
        return self.service.signer

    def close(self) -> None:
        for service in self._services:
            service.close()

    # -- data ------------------------------------------------------------------------------
    def add_subscribers(self, n: int, *, prefix: str = "user", domain: str = "example.org") -> list[str]:
        emails = []
        for i in range(n):
            subscriber, _ = add_subscriber(self.store, f"{prefix}{i:04d}@{domain}", name=f"Reader {i}")
            emails.append(subscriber.email)
        return emails

    def add_report(self) -> None:
        """A fresh report, so that every subscriber has something new for the next edition."""
        self._report_seq += 1
        now = datetime.now(timezone.utc)  # after every earlier edition's as_of
        self.store.reports.upsert_reports(
            [Report(id=f"test-report-{self._report_seq}", title=f"Fresh report {self._report_seq}", url=f"https://example.com/r/{self._report_seq}", published=now, teaser="News.")]
        )

    def sql(self, statement: str, **params: Any) -> Any:
        with self.store.engine.begin() as conn:
            return conn.execute(sa.text(statement), params)

    def make_due(self, key: str) -> None:
        """Move every deferred row of an edition's next attempt into the past."""
        past = (datetime.now(timezone.utc) - timedelta(seconds=5)).replace(tzinfo=None)
        self.sql(
            "UPDATE deliveries SET next_attempt_at = :past WHERE state = 'deferred' AND edition_id = (SELECT id FROM editions WHERE key = :key)",
            past=past,
            key=key,
        )

    # -- running ---------------------------------------------------------------------------
    def run(self, key: str, **kwargs: Any) -> EditionResult:
        return self.service.runner.run(key=key, **kwargs)

    def edition(self, key: str) -> Any:
        edition = self.store.editions.find_edition(key)
        assert edition is not None
        return self.store.editions.get_edition(edition.id)

    def cli(self, *args: str) -> Result:
        from newsletter.cli import main

        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(self.env)
        env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result

    def check(self, key: str, **kwargs: Any) -> Checked:
        return check_invariants(self.store, self.signer, self.sink.messages() if self.sink is not None else [], key, **kwargs)


@pytest.fixture
def world(tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A Harness on the smtp_sink; runs in tmp_path so no ./newsletter.toml is read."""
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(var)
    harness = Harness(tmp_path, smtp_sink)
    try:
        yield harness
    finally:
        smtp_sink.faults.clear()
        harness.close()


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())
