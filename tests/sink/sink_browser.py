"""Debian's chromium for the sink's browser tests (Playwright cannot download its own here)."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)",
)
