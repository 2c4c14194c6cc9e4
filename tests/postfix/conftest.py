"""A real Postfix between the service and its readers (Debian's postfix, installed by .ci/run).

- ``postfix``: one private instance per test module (tests/postfix/instance.py), started once and
  stopped after the module;
- ``world``: the delivery tests' Harness (tests/delivery/conftest.py), mailing through that Postfix,
  greeting it as news.example.com, with the VERP bounce domain ``bounces.test``;
- ``relay``: per test, the instance reconfigured (``postfix reload``) so that readers' domains are
  relayed to this test's sink and ``bounces.test`` to a ``BounceReceiver`` on this test's store.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from newsletter.delivery.bounces import BounceProcessor, BounceReceiver
from tests.delivery.conftest import Harness
from tests.postfix.instance import PrivatePostfix, postfix_version

BOUNCE_DOMAIN = "bounces.test"


@pytest.fixture(scope="module")
def postfix() -> Iterator[PrivatePostfix]:
    version = postfix_version()
    if version is None:
        pytest.skip(
            "Debian's postfix is not installed or we are not root"
            " (.ci/run installs it: apt-get install postfix)"
        )
    # Not under pytest's basetemp: its folders are 0700, and Postfix's daemons run as user postfix.
    root = Path(tempfile.mkdtemp(prefix="newsletter-postfix-"))
    root.chmod(0o755)
    instance = PrivatePostfix(root)
    instance.configure({})
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


class Relay:
    """This test's view of the module's Postfix."""

    def __init__(
        self, postfix: PrivatePostfix, world: Harness, receiver: BounceReceiver, maildir: Path
    ) -> None:
        self.postfix = postfix
        self.world = world
        self.receiver = receiver
        self.maildir = maildir

    def configure(
        self,
        main: Mapping[str, str] | None = None,
        *,
        routes: Mapping[str, str] | None = None,
        smtpd: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        """Relay example.org (and ``routes``: domain or address -> transport) to the sink,
        bounces.test to the receiver."""
        table = {
            "example.org": f"smtp:[127.0.0.1]:{self.world.sink.port}",
            BOUNCE_DOMAIN: f"smtp:[127.0.0.1]:{self.receiver.port}",
            **(routes or {}),
        }
        settings = {
            "relay_domains": " ".join(sorted({k.rsplit("@", 1)[-1] for k in table})),
            "transport_maps": "inline:{" + ", ".join(f"{{{k}={v}}}" for k, v in table.items()) + "}",
            **(main or {}),
        }
        self.postfix.configure(settings, smtpd_options=smtpd, files=files)
        self.postfix.reload()
        time.sleep(0.5)  # master re-reads master.cf; the listener is replaced

    def settle(self, until: Callable[[], bool] = lambda: True, *, timeout: float = 60) -> None:
        """Wait until Postfix's queue is empty and ``until()`` holds (flushing deferred mail meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.postfix.queue_size() == 0 and until():
                return
            self.postfix.flush()
            time.sleep(0.5)
        lines = [
            line
            for line in self.postfix.log().splitlines()
            if re.search(r"status=|warning|fatal|error|reject", line)
        ]
        raise AssertionError(
            f"Postfix did not settle in {timeout}s; queue {self.postfix.queue_size()},"
            f" {len(self.received())} reports received; log:\n" + "\n".join(lines[-40:])
        )

    def copies(self, email: str) -> int:
        return len([m for m in self.world.sink.messages() if m.rcpt_tos == (email,)])

    def received(self) -> list[bytes]:
        import mailbox

        box = mailbox.Maildir(str(self.maildir), create=False)
        return [box.get_bytes(k) for k in box.keys()]


@pytest.fixture
def world(
    tmp_path: Path, sink: Any, postfix: PrivatePostfix, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(var)
    harness = Harness(tmp_path, sink)
    harness.configure(
        smtp_port=postfix.port, smtp_helo_name="news.example.com", mail_bounce_domain=BOUNCE_DOMAIN
    )
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def relay(postfix: PrivatePostfix, world: Harness, tmp_path: Path) -> Iterator[Relay]:
    service = world.service
    processor = BounceProcessor(
        service.store.outbox, service.store.subscribers, service.signer, service.runner.suppressor()
    )
    maildir = tmp_path / "bounces"
    with BounceReceiver(processor, maildir=maildir, port=0) as receiver:
        relay = Relay(postfix, world, receiver, maildir)
        relay.configure()
        yield relay
        # Leave nothing queued for the module's next test.
        os.system(f"postsuper -c {postfix.config_dir} -d ALL >/dev/null 2>&1")
