"""The operator CLI through click's CliRunner (in process, against the real sink and a SQLite
file), `newsletter demo` as a subprocess, and --help for every command."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.config import SAMPLE_FEED, SAMPLE_SUBSCRIBERS
from newsletter.models import Cadence
from newsletter.storage.store import Store
from newsletter.tokens import Purpose, TokenSigner
from tests.factories import SECRET_KEY
from tests.invariants import assert_wire_format, parse
from tests.servers import free_port

from .helpers import parts, scan_html

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path, base_env, monkeypatch):
    """invoke(*args, env=...) -> Result, with --config pointing at an empty TOML file."""
    from newsletter import cli as cli_module
    from newsletter.cli import common

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)
    config = tmp_path / "test.toml"
    config.write_text("# test configuration: everything comes from the environment\n", encoding="utf-8")
    for var in [v for v in os.environ if v.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(var)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, config_path: str | None = None):
        full_env = {**base_env, **(env or {})}
        return runner.invoke(cli_module.main, ["--config", config_path or str(config), *args], env=full_env)

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result.output


def clean_error(result) -> str:
    """A handled error: non-zero exit, 'Error: ...' first, no traceback, no stray exception."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    out = result.output.lstrip()
    assert out.startswith("Error:"), out
    return out


def test_subscribers_add_list_remove(cli):
    out = ok(
        cli("subscribers", "add", "Ann@EXAMPLE.org", "--name", "Ann Reader", "--topics", "China;Government")
    )
    assert "Added ann@example.org" in out
    ok(cli("subscribers", "add", "bob@example.net"))
    out = ok(cli("subscribers", "add", "ann@example.org"))
    assert "already a subscriber" in out
    out = ok(cli("subscribers", "list"))
    assert "ann@example.org" in out and "Ann Reader" in out and "China, Government" in out
    assert "bob@example.net" in out and "2 subscribers" in out
    out = ok(cli("subscribers", "remove", "ANN@example.org"))
    assert "Removed ann@example.org" in out
    out = ok(cli("subscribers", "list"))
    assert "ann@example.org" not in out and "1 subscriber" in out
    assert "ann@example.org" in clean_error(cli("subscribers", "remove", "ann@example.org"))


def test_subscribers_import_twice_and_bad_rows(cli, tmp_path):
    out = ok(cli("subscribers", "import", str(SAMPLE_SUBSCRIBERS)))
    assert "8 added, 0 updated, 0 unchanged, 0 invalid, 0 suppressed" in out
    out = ok(cli("subscribers", "import", str(SAMPLE_SUBSCRIBERS)))
    assert "0 added, 0 updated, 8 unchanged" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("email,name\nnew@example.org,New\nbroken,Broken\n", encoding="utf-8")
    result = cli("subscribers", "import", str(bad))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "1 added, 0 updated, 0 unchanged, 1 invalid" in result.output
    assert "line 3" in result.stderr and "broken" in result.stderr
    assert "9 subscribers" in ok(cli("subscribers", "list"))


def test_subscribers_export_to_file_and_stdout(cli, tmp_path):
    ok(cli("subscribers", "import", str(SAMPLE_SUBSCRIBERS)))
    out_file = tmp_path / "export.csv"
    assert "8 subscribers written" in ok(cli("subscribers", "export", str(out_file)))
    with SAMPLE_SUBSCRIBERS.open(encoding="utf-8", newline="") as f:
        sample = {r["email"]: r for r in csv.DictReader(f)}
    with out_file.open(encoding="utf-8", newline="") as f:
        exported = {r["email"]: r for r in csv.DictReader(f)}
    assert set(exported) == set(sample)
    for email, row in sample.items():
        assert exported[email]["name"] == row["name"]
        assert exported[email]["topics"] == row["topics"]
        assert exported[email]["status"] == "active"
    stdout = ok(cli("subscribers", "export"))
    assert {r["email"] for r in csv.DictReader(io.StringIO(stdout))} == set(sample)


def test_send_editions_and_rerun(cli, sink, tmp_path):
    ok(cli("subscribers", "import", str(SAMPLE_SUBSCRIBERS)))
    out = ok(cli("send", "--key", "cli-1"))
    assert "cli-1" in out and "sent" in out and " 8" in out
    messages = sink.messages()
    assert len(messages) == 8
    signer = TokenSigner(SECRET_KEY)
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        edition = store.editions.find_edition("cli-1")
        rows = {r.email: r for r in store.outbox.list_deliveries(edition.id)}
    finally:
        store.dispose()
    for m in messages:
        assert_wire_format(m.raw)
        msg = parse(m.raw)
        row = rows[m.rcpt_tos[0]]
        assert str(msg["Message-ID"]) == row.message_id
        token = str(msg["List-Unsubscribe"]).strip("<> ").rsplit("/", 1)[1]
        assert signer.read(Purpose.UNSUBSCRIBE, token) == row.subscriber_id
    out = ok(cli("send", "--key", "cli-1"))
    assert len(sink.messages()) == 8
    assert "already ended" in out
    out = ok(cli("send", "--key", "cli-2"))
    assert "skipped" in out and len(sink.messages()) == 8
    out = ok(cli("editions"))
    assert "cli-1" in out and "cli-2" in out and "skipped" in out
    out = ok(cli("editions", str(edition.id)))
    assert "Edition cli-1" in out and "sent" in out and "8" in out
    assert "999" in clean_error(cli("editions", "999"))


def test_preview_writes_personalised_html(cli, tmp_path, sink):
    ok(cli("subscribers", "import", str(SAMPLE_SUBSCRIBERS)))
    out_file = tmp_path / "preview.html"
    out = ok(cli("preview", "--subscriber", "priya.raman@example.org", "--out", str(out_file)))
    assert "priya.raman@example.org" in out and "Cybersecurity" in out
    assert "Why:" in out and "first digest" in out
    assert "among the newest (first digest); topic Cybersecurity" in out  # the reason per report
    html = out_file.read_text(encoding="utf-8")
    assert "%%" not in html and "priya.raman@example.org" in html
    hrefs = [a.get("href") for t, a in scan_html(html).tags if t == "a"]
    unsub = [h for h in hrefs if "/unsubscribe/" in h]
    assert len(unsub) == 1
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        priya = store.subscribers.find_subscriber("priya.raman@example.org")
    finally:
        store.dispose()
    assert TokenSigner(SECRET_KEY).read(Purpose.UNSUBSCRIBE, unsub[0].rsplit("/", 1)[1]) == priya.id
    assert sink.messages() == []  # a preview sends nothing
    assert "nobody@example.org" in clean_error(cli("preview", "--subscriber", "nobody@example.org"))


def test_config_shows_effective_values_and_hides_secrets(cli, sink):
    out = ok(cli("config", env={"NEWSLETTER_SMTP_PASSWORD": "hunter2-secret"}))
    assert "smtp.port" in out and str(sink.port) in out
    assert "NEWSLETTER_SMTP_HOST" in out
    assert "hunter2-secret" not in out and SECRET_KEY not in out
    assert "(set)" in out


def test_bad_inputs_are_clean_errors(cli, tmp_path, sink):
    out = clean_error(cli("config", env={"NEWSLETTER_SMTP_PORT": "abc"}))
    assert "smtp.port" in out and "NEWSLETTER_SMTP_PORT" in out
    assert "NEWSLETTER_SMTP_HOTS" in clean_error(cli("config", env={"NEWSLETTER_SMTP_HOTS": "x"}))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[smtp]\nhots = 1\n", encoding="utf-8")
    assert "smtp.hots" in clean_error(cli("config", config_path=str(bad_toml)))
    assert "missing.toml" in clean_error(cli("config", config_path=str(tmp_path / "missing.toml")))
    assert "not-an-address" in clean_error(cli("subscribers", "add", "not-an-address"))
    assert "Error:" in clean_error(
        cli("subscribers", "add", "x@example.org", "--name", "Eve\r\nBcc: y@example.org")
    )
    assert "missing.csv" in clean_error(cli("subscribers", "import", str(tmp_path / "missing.csv")))
    ok(cli("subscribers", "add", "reader@example.org"))
    url = f"http://127.0.0.1:{free_port()}/feed.xml"
    out = clean_error(
        cli(
            "send", "--key", "nofeed", env={"NEWSLETTER_REPORTS_FEED": url, "NEWSLETTER_REPORTS_TIMEOUT": "2"}
        )
    )
    assert url in out
    assert len(out.splitlines()[0]) < 300
    assert sink.messages() == []
    out = ok(cli("editions"))
    assert "nofeed" in out and "failed" in out
    broken = tmp_path / "broken.xml"
    broken.write_text("not a feed", encoding="utf-8")
    assert str(broken) in clean_error(
        cli("send", "--key", "broken", env={"NEWSLETTER_REPORTS_FEED": str(broken)})
    )
    assert sink.messages() == []
    usage = cli("editions", "abc")
    assert usage.exit_code == 2 and "Error:" in usage.output and "Traceback" not in usage.output


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    yield prefix
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_command_has_help():
    from newsletter.cli import main

    runner = CliRunner()
    paths = list(all_commands(main))
    names = {p[0] for p in paths if p}
    assert {"send", "preview", "demo", "editions", "subscribers", "config", "sink"} <= names
    assert {("subscribers", c) for c in ("add", "remove", "list", "import", "export")} <= set(paths)
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, f"{' '.join(path)} --help: {result.output}"
        assert "Usage:" in result.output and "Traceback" not in result.output
        cmd = main
        for part in path:
            cmd = cmd.get_command(click.Context(cmd), part)
        assert (cmd.help or cmd.short_help or "").strip(), (
            f"{' '.join(path) or 'newsletter'} has no help text"
        )


def expected_demo_recipients() -> set[str]:
    """Sample subscribers with at least one report in their topics (read independently)."""
    feed_topics = {c.text.casefold() for c in ET.parse(SAMPLE_FEED).getroot().iter("category")}
    with SAMPLE_SUBSCRIBERS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        r["email"]
        for r in rows
        if not r["topics"].strip() or {t.strip().casefold() for t in r["topics"].split(";")} & feed_topics
    }


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}


def test_demo_subprocess_delivers_one_message_per_matching_subscriber(tmp_path):
    from email import message_from_bytes, policy

    maildir = tmp_path / "maildir"
    newsletter_bin = Path(sys.executable).parent / "newsletter"
    command = [str(newsletter_bin)] if newsletter_bin.exists() else [sys.executable, "-m", "newsletter"]
    proc = subprocess.run(
        [*command, "demo", "--maildir", str(maildir)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    files = sorted((maildir / "new").iterdir())
    expected = expected_demo_recipients()
    assert len(files) == len(expected) == 8
    recipients = set()
    for path in files:
        raw = path.read_bytes()
        assert_wire_format(raw)
        msg = message_from_bytes(raw, policy=policy.default)
        recipients.add(msg["To"].addresses[0].addr_spec)
        text, html = parts(msg)
        assert "Unsubscribe:" in text and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert recipients == expected
    assert str(maildir) in proc.stdout


def test_python_dash_m_newsletter_help():
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "--help"],
        cwd=PROJECT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "Usage:" in proc.stdout and "demo" in proc.stdout


def test_send_with_a_schedule_key_reaches_only_that_cadence(cli, sink, tmp_path):
    ok(cli("subscribers", "add", "daily@example.org"))
    ok(cli("subscribers", "add", "weekly@example.org"))
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        weekly = store.subscribers.find_subscriber("weekly@example.org")
        store.subscribers.update_preferences(weekly.id, topics=(), cadence=Cadence.WEEKLY, paused=False)
    finally:
        store.dispose()
    ok(cli("send", "--key", "weekly-2026-11-30T07:00-05:00"))
    assert [m.rcpt_tos for m in sink.messages()] == [("weekly@example.org",)]
    ok(cli("send", "--key", "manual-catch-up"))
    # A manual edition is for every cadence; the weekly reader has nothing new since theirs.
    assert sorted(m.rcpt_tos[0] for m in sink.messages()) == ["daily@example.org", "weekly@example.org"]
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        assert store.editions.find_edition("weekly-2026-11-30T07:00-05:00").schedule == "weekly"
    finally:
        store.dispose()
