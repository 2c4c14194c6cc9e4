"""Helpers for the web tests: settings for the app, the app under test, and reading links out of mail.

Settings come from the shared factories (tests/factories.py): an explicit env and an empty
config file, so neither the developer's environment nor ./newsletter.toml leaks in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter.config import Settings
from newsletter.models import SubscriberStatus
from newsletter.service import Service
from tests.factories import build_settings

BASE_URL = "https://news.example.test"
LINK_RE = re.compile(r"https?://[^\s\"<>]+")


def make_settings(tmp_path: Path, *, smtp_port: int, base_url: str = BASE_URL) -> Settings:
    """The shared test settings with the site at ``base_url``."""
    return build_settings(tmp_path, smtp_port=smtp_port, NEWSLETTER_SITE_BASE_URL=base_url)


@dataclass
class Web:
    """One app under test: its service, a TestClient, and the sink its mail goes to."""

    service: Service
    app: Starlette
    client: TestClient
    sink: Any

    @property
    def store(self) -> Any:
        return self.service.store

    def subscribe(self, email: str, **fields: Any) -> Any:
        return self.client.post("/subscribe", data={"email": email, **fields})

    def mails(self, to: str) -> list[Any]:
        return self.sink.messages(to=to)

    def one_mail(self, to: str) -> EmailMessage:
        found = self.sink.wait_for(to=to, count=1, timeout=5)
        assert len(found) == 1, f"expected one mail to {to}, got {len(found)}"
        # Every mail must pass the sink's checks (CRLF, line lengths, Message-ID, unsubscribe headers...).
        assert [(c.name, c.reason) for c in found[0].checks if c.status == "fail"] == []
        return found[0].as_email()

    def add(
        self, email: str, status: SubscriberStatus = SubscriberStatus.ACTIVE, topics: tuple[str, ...] = ()
    ) -> int:
        subscriber, _ = self.store.subscribers.add_subscriber(email=email, status=status, topics=topics)
        if status is not SubscriberStatus.ACTIVE and status is not SubscriberStatus.PENDING:
            self.store.subscribers.set_status(subscriber.id, status)
        return int(subscriber.id)


def body_text(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def link_path(mail: EmailMessage, prefix: str) -> str:
    """The path of the first link in the text part that starts with ``prefix`` (e.g. /confirm/)."""
    for url in LINK_RE.findall(body_text(mail)):
        path = urlsplit(url).path
        if path.startswith(prefix):
            return path
    raise AssertionError(f"no {prefix} link in:\n{body_text(mail)}")


def unsubscribe_path(mail: EmailMessage) -> str:
    header = str(mail["List-Unsubscribe"])
    match = re.fullmatch(r"<(https?://[^>]+)>", header.strip())
    assert match, header
    return urlsplit(match.group(1)).path
