"""The `smtp_sink` fixture, used from a separate test session through pytester."""

from __future__ import annotations

import pytest


def test_smtp_sink_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import smtplib

        def test_send(smtp_sink):
            assert smtp_sink.host == "127.0.0.1" and smtp_sink.port > 0
            with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as c:
                c.sendmail("a@example.com", ["b@example.org"], b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
            [m] = smtp_sink.wait_for(to="b@example.org", timeout=5)
            assert m.subject == "hi"
            assert len(smtp_sink.messages()) == 1
            smtp_sink.clear()
            assert smtp_sink.messages() == []

        def test_faults(smtp_sink):
            from newsletter.sink.faults import FaultRule
            smtp_sink.faults.add(FaultRule(stage="rcpt", code=550))
            with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as c:
                try:
                    c.sendmail("a@example.com", ["b@example.org"], b"x\\r\\n")
                except smtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients
            assert refused == {"b@example.org": (550, b"5.1.1 Mailbox unavailable")}
            assert smtp_sink.messages() == []

        def test_each_test_gets_a_fresh_sink(smtp_sink):
            assert smtp_sink.messages() == [] and smtp_sink.faults.rules == []
        """
    )
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=3)


def test_plugin_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, newsletter.sink.pytest_plugin; "
        "heavy = [m for m in ('aiosmtpd', 'starlette', 'uvicorn', 'httpx', 'newsletter.sink.server') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
