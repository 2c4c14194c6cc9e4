"""`newsletter sink` as an operator runs it: a real process, real SMTP, Ctrl-C."""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sink_samples import build, wire

from newsletter.sink.cli import parse_size, sink_command


def test_help_documents_flags_and_fault_syntax() -> None:
    result = CliRunner().invoke(sink_command, ["--help"])
    assert result.exit_code == 0
    for text in (
        "--smtp-port",
        "--maildir",
        "--http-port",
        "--listen",
        "--max-messages",
        "--max-size",
        "--fault",
        "--close-after",
        "--allow-remote-one-click",
        "STAGE:ACTION",
        "rcpt:550 5.1.1 No such user:to=*@bad.example",
        "drop-after-store",
    ):
        assert text in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fault", "data:250"], "Error: --fault: "),
        (["--fault", "nope"], "Error: --fault: "),
        (["--max-size", "ten"], "Error: --max-size: "),
    ],
)
def test_bad_values_give_one_error_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(sink_command, [*args, "--maildir", str(tmp_path / "m"), "--smtp-port", "0"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert "Traceback" not in result.output


def test_unwritable_maildir_is_an_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(sink_command, ["--maildir", str(blocker / "sub"), "--smtp-port", "0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot create maildir") and "--maildir" in result.output


def test_sizes() -> None:
    assert parse_size("10M") == 10 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    assert parse_size("1.5MiB") == 1536 * 1024
    assert parse_size("2000") == 2000
    with pytest.raises(ValueError, match="K/M/G"):
        parse_size("lots")


def test_runs_receives_prints_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter.sink.cli",
            "--smtp-port",
            "0",
            "--maildir",
            str(tmp_path / "m"),
            "--fault",
            "rcpt:550 5.1.1 No such user:to=*@bad.example",
            "--listen",
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(re.search(r"smtp://127\.0\.0\.1:(\d+)", first).group(1))  # type: ignore[union-attr]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            refused = client.sendmail(
                "news@news.example.com", ["ana@example.org", "x@bad.example"], wire(build())
            )
        assert list(refused) == ["x@bad.example"]
        line = ""
        while "->" not in line:
            line = proc.stdout.readline()
        assert "news@news.example.com -> ana@example.org" in line
        assert "'Video Surveillance News: this week'" in line and "bytes" in line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Sink stopped." in out
    assert "Traceback" not in err


def test_non_loopback_listen_warns(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter.sink.cli",
            "--smtp-port",
            "0",
            "--maildir",
            str(tmp_path / "m"),
            "--listen",
            "0.0.0.0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert proc.stderr.readline().startswith("Warning: listening on 0.0.0.0")
        assert "smtp://0.0.0.0:" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
