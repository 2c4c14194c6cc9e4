"""The delivery tests' world: one sink, one database, one journal directory, one fake clock,
the operator CLI run in-process -- all on the shared factories (tests/factories.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from newsletter.config import Settings
from newsletter.editions.runner import EditionResult
from newsletter.models import DeliveryState, Report
from newsletter.service import Service
from tests.factories import FakeClock, Services, add_subscribers, service_env
from tests.invariants import Checked, check_delivery, edition_rows


class Harness:
    """One test's world: a sink, a database, a journal directory and the env that names them.

    Every Service it builds -- the CLI's included -- reads ``clock``, so a test moves time
    with ``clock.advance`` (or ``make_due``) instead of rewriting timestamps in the database.
    """

    def __init__(self, tmp_path: Path, sink: Any) -> None:
        self.tmp = tmp_path
        self.sink = sink
        self.clock = FakeClock(datetime.now(UTC))
        env = service_env(
            tmp_path,
            smtp_port=sink.port,
            NEWSLETTER_SMTP_TIMEOUT="2",
            NEWSLETTER_SMTP_RETRIES="1",
            NEWSLETTER_SMTP_CONNECTIONS="2",
        )
        self._services = Services(tmp_path, env, clock=self.clock)
        self._main: Service | None = None
        self._report_seq = 0

    @property
    def env(self) -> dict[str, str]:
        return self._services.env

    # -- configuration -------------------------------------------------------------------
    def configure(self, **overrides: Any) -> None:
        """Change the environment for every later service and CLI call (keys: NEWSLETTER_ suffix)."""
        for key, value in overrides.items():
            self.env[f"NEWSLETTER_{key.upper()}"] = str(value)
        self._main = None  # rebuilt with the new settings on next use

    def settings(self) -> Settings:
        return self._services.settings()

    def new_service(self) -> Service:
        return self._services.new()

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
        self._services.close()

    # -- data ------------------------------------------------------------------------------
    def add_subscribers(self, n: int, *, prefix: str = "user", domain: str = "example.org") -> list[str]:
        return add_subscribers(self.store, n, prefix=prefix, domain=domain)

    def add_report(self) -> None:
        """A fresh report, so that every subscriber has something new for the next edition:
        published a second after every earlier edition's cut-off, a second before the next one."""
        self._report_seq += 1
        published = self.clock.advance(timedelta(seconds=1))
        self.clock.advance(timedelta(seconds=1))
        n = self._report_seq
        self.store.reports.upsert_reports(
            [
                Report(
                    id=f"test-report-{n}",
                    title=f"Fresh report {n}",
                    url=f"https://example.com/r/{n}",
                    published=published,
                    teaser="News.",
                )
            ]
        )

    # -- time ------------------------------------------------------------------------------
    def make_due(self, key: str) -> None:
        """Move the clock to when every deferred row of an edition is due."""
        due = [
            r.next_attempt_at
            for r in edition_rows(self.store, self.edition(key).id)
            if r.state is DeliveryState.DEFERRED
        ]
        assert due and all(due), f"edition {key} has no deferred rows with a next attempt"
        latest = max(d for d in due if d is not None)
        if latest > self.clock():
            self.clock.set(latest + timedelta(seconds=1))

    # -- running ---------------------------------------------------------------------------
    def run(self, key: str, **kwargs: Any) -> EditionResult:
        return self.service.runner.run(key=key, **kwargs)

    def edition(self, key: str) -> Any:
        edition = self.store.editions.find_edition(key)
        assert edition is not None
        return self.store.editions.get_edition(edition.id)

    def cli(self, *args: str) -> Result:
        """The operator CLI in-process, on this world's env and clock
        (the Service is handed to it as ``obj``)."""
        from newsletter.cli import main

        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(self.env)
        env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
        return CliRunner().invoke(main, list(args), env=env, obj=self.new_service(), catch_exceptions=False)

    def check(self, key: str, **kwargs: Any) -> Checked:
        return check_delivery(self.store, self.signer, self.sink.messages(), key, **kwargs)


@pytest.fixture
def world(tmp_path: Path, sink: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A Harness on the shared sink; runs in tmp_path so no ./newsletter.toml is read."""
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(var)
    harness = Harness(tmp_path, sink)
    try:
        yield harness
    finally:
        harness.close()
