"""Fixtures for the sink's own tests. `smtp_sink` itself comes from the package's plugin."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.sink.server import SinkServer


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "maildir"


@pytest.fixture
def sink(maildir: Path) -> Iterator[SinkServer]:
    """A sink with the viewer off (most tests need SMTP only)."""
    with SinkServer(maildir=maildir) as server:
        yield server


@pytest.fixture
def smtp(sink: SinkServer) -> Iterator[smtplib.SMTP]:
    """An smtplib client connected to `sink`."""
    client = smtplib.SMTP(sink.host, sink.smtp_port, timeout=10)
    try:
        yield client
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            pass
