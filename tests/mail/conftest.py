"""Fixtures of the mail tests: each mail type's decoded HTML and text, built by the product's own code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.service import Service
from tests.mail.helpers import LONG_WORD, MAIL_TYPES, mail_bytes, parts, subscriber


@pytest.fixture
def mail_service(make_service: Callable[..., Service]) -> Service:
    """A service whose links are long: a 54-character base_url."""
    return make_service(NEWSLETTER_SITE_BASE_URL="https://newsletter.video-surveillance-news.example.com")


@pytest.fixture
def mails(mail_service: Service) -> dict[str, bytes]:
    """Each mail type's bytes (not dot-stuffed) for subscriber 123456,
    the digest with a long unbroken word."""
    who = subscriber(123456, email="jose.nunez.long-address@example.org", name="José Núñez")
    out = {}
    for kind in MAIL_TYPES:
        data, stuffed = mail_bytes(
            kind,
            mail_service.settings,
            mail_service.signer,
            mail_service.store.subscribers,
            who,
            f"Ban {LONG_WORD} tested",
        )
        out[kind] = data.replace(b"\r\n..", b"\r\n.") if stuffed else data
    return out


@pytest.fixture
def htmls(mails: dict[str, bytes]) -> dict[str, str]:
    return {kind: parts(raw)[1] for kind, raw in mails.items()}


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    path = (
        Path(__file__).resolve().parents[2] / "test-output" / "mail-screens"
    )  # the checkout, whatever the cwd
    path.mkdir(parents=True, exist_ok=True)
    return path
