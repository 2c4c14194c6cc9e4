"""Fixtures for the sink's own tests. `smtp_sink` itself comes from the package's plugin."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sink_browser import CHROMIUM, CHROMIUM_ARGS

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


@pytest.fixture
def browser_page() -> Iterator[Callable[..., Any]]:
    """`browser_page(*extra_chromium_args)`: a fresh Playwright page in Debian's chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browsers: list[Any] = []

        def open_page(*extra: str) -> Any:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra]
            )
            browsers.append(browser)
            return browser.new_page()

        try:
            yield open_page
        finally:
            for browser in browsers:
                browser.close()


@pytest.fixture
def page(browser_page: Callable[..., Any]) -> Any:
    return browser_page()
