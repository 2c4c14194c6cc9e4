"""One answer to "is this host loopback?" for the CLI's warning, the viewer's Host check and one-click."""

from __future__ import annotations

import pytest

from newsletter.sink.guard import HostPolicy
from newsletter.sink.net import is_loopback

CASES = [
    ("127.0.0.1", True),
    ("127.1.2.3", True),
    ("127.8.9.1", True),
    ("::1", True),
    ("[::1]", True),
    ("localhost", True),
    ("LOCALHOST", True),
    ("localhost.", True),
    ("app.localhost", True),
    ("::ffff:127.0.0.1", True),
    ("[::ffff:127.0.0.1]", True),
    ("0.0.0.0", False),
    ("::", False),
    ("::ffff:10.0.0.1", False),
    ("10.0.0.1", False),
    ("", False),
    ("news.example.com", False),
    ("127.0.0.1.nip.io", False),
    ("localhost.example.com", False),
]


@pytest.mark.parametrize("host, loopback", CASES)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host, loopback", CASES)
def test_viewer_answers_exactly_the_loopback_hosts(host: str, loopback: bool) -> None:
    """The viewer's Host check (listening elsewhere, nothing allowed) agrees with `is_loopback`."""
    policy = HostPolicy("192.0.2.7")
    bare = host.strip("[]")
    value = f"[{bare}]:8025" if ":" in bare else (f"{bare}:8025" if bare else "")
    assert policy.allows(value) is loopback
