"""Fixtures for the PostgreSQL tests: a throw-away database per test on a real server.

The server comes from NEWSLETTER_TEST_DATABASE_URL (CI sets it; `.ci/run` starts a
local PostgreSQL), e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``. Without
it every test here is skipped with that reason. Each test gets its own database,
created with a random name through an autocommit connection to the server's
``postgres`` database and dropped afterwards, so parallel or repeated runs never
collide and no test sees another's rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from newsletter.service import Service
from newsletter.sink.server import SinkServer
from tests.factories import PG_URL_VAR, Services, pg_server_url, service_env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pg_server_url():
        return
    skip = pytest.mark.skip(
        reason=f"{PG_URL_VAR} is not set: no PostgreSQL server to test against (CI sets it)"
    )
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An autocommit engine on the server's maintenance database (CREATE/DROP DATABASE)."""
    url = pg_server_url()
    if not url:
        pytest.skip(f"{PG_URL_VAR} is not set")
    admin = sa.create_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT", future=True
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:  # set but unreachable: a real failure, not a skip
        pytest.fail(f"{PG_URL_VAR}={url} is set but the server cannot be reached: {exc.orig}")
    yield admin
    admin.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped after the test."""
    name = f"nl_test_{secrets.token_hex(6)}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url()).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with pg_admin.connect() as conn:
            # FORCE (PostgreSQL 13+) ends connections a failed test or a killed worker left open.
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_sink(tmp_path: Path) -> Iterator[SinkServer]:
    """The project's SMTP sink on a free loopback port, keeping up to 20,000 messages."""
    server = SinkServer(maildir=tmp_path / "maildir", smtp_port=0, max_messages=20_000)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_env(tmp_path: Path, pg_url: str, pg_sink: SinkServer) -> dict[str, str]:
    """The environment a service (in-process or a `newsletter` subprocess) runs with: the
    shared test environment (tests/factories.py) on the fresh database and ``pg_sink``."""
    return service_env(tmp_path, smtp_port=pg_sink.port, NEWSLETTER_DATABASE_URL=pg_url)


@pytest.fixture
def pg_service(
    tmp_path: Path, pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Service]]:
    """pg_service(**overrides) -> a Service on pg_env, closed after the test."""
    monkeypatch.chdir(tmp_path)
    services = Services(tmp_path, pg_env)
    yield services.new
    services.close()
