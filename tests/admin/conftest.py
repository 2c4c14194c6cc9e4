"""Fixtures for the operator console: a real Service on a SQLite file mailing the in-process sink,
the console app under Starlette's TestClient, and users of each role."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from newsletter.admin.app import create_console
from newsletter.service import Service

from .helpers import Operator, make_users


@pytest.fixture
def console_service(make_service: Callable[..., Service]) -> Service:
    """A service with the sample feed's reports and three active readers."""
    service = make_service()
    service.runner.ingest()
    for email in ("ana@example.org", "ben@example.org", "cy@example.org"):
        service.store.subscribers.add_subscriber(email=email)
    return service


@pytest.fixture
def console(console_service: Service) -> Iterator[Operator]:
    """The console (dev mode: cookies without Secure over the test's http) with an admin,
    an editor and a viewer."""
    make_users(console_service)
    app = create_console(console_service, dev=True)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield Operator(console_service, app, client)
    app.state.console.engine.wait_idle()


@pytest.fixture
def signed_in(console: Operator) -> Callable[[str], Operator]:
    def sign_in(role: str) -> Operator:
        console.login(f"{role}@console.example.org")
        return console

    return sign_in
