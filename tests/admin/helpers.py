"""Helpers for the console tests: users, signing in, and forms as a browser posts them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter.admin.accounts import Accounts
from newsletter.service import Service

PASSWORD = "correct horse battery staple"
ORIGIN = {"Origin": "http://testserver"}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
LOGIN_RE = re.compile(r'name="login_token" value="([^"]+)"')


def make_users(service: Service) -> None:
    accounts = Accounts(service.store.accounts, idle=timedelta(seconds=service.settings.admin.session_idle))
    for role in ("admin", "editor", "viewer"):
        accounts.create_user(f"{role}@console.example.org", role=role, password=PASSWORD)


@dataclass
class Operator:
    """The console under test and one TestClient (one browser) on it."""

    service: Service
    app: Starlette
    client: TestClient

    def login(self, email: str, password: str = PASSWORD) -> Any:
        page = self.client.get("/admin/login")
        token = LOGIN_RE.search(page.text)
        assert token, page.text
        return self.client.post(
            "/admin/login",
            data={"login_token": token.group(1), "email": email, "password": password},
            headers=ORIGIN,
        )

    def csrf(self, path: str = "/admin/") -> str:
        page = self.client.get(path)
        found = CSRF_RE.search(page.text)
        assert found, f"no CSRF token on {path}: {page.status_code} {page.text[:300]}"
        return found.group(1)

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf_from: str = "/admin/", **kwargs: Any
    ) -> Any:
        """A form post as the console's own page makes it: same Origin, the session's CSRF token."""
        return self.client.post(
            path, data={"csrf": self.csrf(csrf_from), **(data or {})}, headers=ORIGIN, **kwargs
        )

    @property
    def engine(self) -> Any:
        return self.app.state.console.engine
