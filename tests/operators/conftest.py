"""Operator tests at scale: imports from other tools, listings, feeds, and operator mistakes.

The CLI runner is the one of tests/core (``cli``: the real command group, an empty
config file, the test environment); ``store`` is a Store on a SQLite file in tmp_path;
``feed_server`` (tests/conftest.py) serves bytes over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.storage.store import Store
from tests.core.test_core_cli import cli  # noqa: F401  (the shared CLI fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/subs.sqlite")
    yield s
    s.dispose()
