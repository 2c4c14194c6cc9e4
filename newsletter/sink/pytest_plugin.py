"""pytest plugin (entry point `newsletter_sink`): the `smtp_sink` fixture.

Loaded by every pytest run in an environment where the package is installed, so importing
it must cost nothing and fail never: the sink itself is imported inside the fixture.

    def test_signup_sends_confirmation(smtp_sink):
        app.send_confirmation("ana@example.org", smtp=(smtp_sink.host, smtp_sink.port))
        [message] = smtp_sink.wait_for(to="ana@example.org", timeout=5)
        assert all(c.status != "fail" for c in message.checks)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from newsletter.sink.server import SinkServer


@pytest.fixture
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SinkServer]:
    """A running sink on a free loopback port, storing into a fresh temporary Maildir.

    Exposes `.host`, `.port` (= `.smtp_port`), `.messages()`, `.wait_for(...)`, `.get(id)`,
    `.faults`, `.clear()`. Stopped after the test; no viewer (start a `SinkServer` with
    `http_port=0` yourself if a test needs one).
    """
    from newsletter.sink.server import SinkServer

    maildir = tmp_path_factory.mktemp("smtp-sink") / "maildir"
    sink = SinkServer(maildir=maildir, host="127.0.0.1", smtp_port=0)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
