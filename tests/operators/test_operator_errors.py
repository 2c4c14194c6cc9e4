"""Operator mistakes answered in one line with a hint: a mistyped SQLite path, a read-only
database, topics no report has, reactivating someone already active."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.content.feed import parse_feed
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber
from tests.core.test_core_cli import clean_error, ok
from tests.factories import Item, rss, utc


def test_sqlite_path_whose_directory_does_not_exist_is_refused_not_created(cli, tmp_path):
    missing = tmp_path / "subscriberz" / "newsletter.db"
    out = clean_error(cli("subscribers", "list", env={"NEWSLETTER_DATABASE_URL": f"sqlite:///{missing}"}))
    assert "does not exist" in out and str(missing.parent) in out and "Hint:" in out and "typo" in out
    assert out.count("\n") == 2  # the error and its hint, nothing more
    assert not missing.parent.exists()


def test_an_sqlite_too_old_for_sends_is_refused_at_start_in_one_line(cli, tmp_path, monkeypatch):
    """Sends claim and commit with RETURNING and UPDATE ... FROM (SQLite 3.35): an older SQLite
    (Ubuntu 20.04's is 3.31) is refused when the database is opened, with what to do, instead of
    a traceback from the first claim of a send. (The version is the one thing faked here: this
    machine's SQLite is new enough.)"""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    out = clean_error(
        cli("subscribers", "list", env={"NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/n.db"})
    )
    assert "SQLite is 3.31.1" in out and "3.35 or newer" in out and "Hint:" in out and "PostgreSQL" in out
    assert out.count("\n") == 2  # the error and its hint, nothing more
    assert not (tmp_path / "n.db").exists(), "nothing is created in a database the service cannot use"


@pytest.fixture
def read_only_database(tmp_path: Path) -> Iterator[Path]:
    """A database file (one subscriber, one report) that this process cannot write.

    Not root: file and directory lose their write bits. Root ignores those, so the
    directory is bind-mounted read-only instead (skipped where mounting is not allowed).
    """
    source = tmp_path / "data"
    source.mkdir()
    store = Store(f"sqlite:///{source}/db.sqlite")
    add_subscriber(store, "reader@example.org")
    store.dispose()
    if os.geteuid() != 0:
        (source / "db.sqlite").chmod(0o444)
        source.chmod(0o555)
        yield source / "db.sqlite"
        source.chmod(0o755)
        return
    target = tmp_path / "readonly"
    target.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "--bind", "-o", "ro", str(source), str(target)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(
            "running as root and a read-only bind mount is not allowed here:"
            " no way to make the file read-only"
        )
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        yield target / "db.sqlite"
    finally:
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


def test_read_only_database_serves_list_editions_config_and_preview(cli, read_only_database, tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_text(rss([Item("A report", "a", utc(2026, 11, 1))]), encoding="utf-8")
    env = {"NEWSLETTER_DATABASE_URL": f"sqlite:///{read_only_database}", "NEWSLETTER_REPORTS_FEED": str(feed)}
    assert "reader@example.org" in ok(cli("subscribers", "list", env=env))
    ok(cli("editions", env=env))
    ok(cli("config", env=env))
    assert "reader@example.org" in ok(cli("preview", "--no-fetch", env=env))
    assert "read-only" in ok(cli("preview", env=env))  # said, and the feed is not fetched into it
    out = clean_error(cli("subscribers", "add", "new@example.org", env=env))
    assert "read-only" in out and "db upgrade" not in out and "Traceback" not in out


def test_reactivate_on_an_active_address_says_so_plainly(cli):
    ok(cli("subscribers", "add", "ann@example.org"))
    out = ok(cli("subscribers", "reactivate", "ann@example.org"))
    assert "already active" in out and "was active" not in out


def test_topics_no_report_has_are_warned_about_on_add_and_import(cli, tmp_path, base_env):
    # Case is ignored, as planning ignores it: only the misspelt topic is named.
    feed = tmp_path / "feed.xml"
    feed.write_text(
        rss([Item("A report", "a", utc(2026, 11, 1), topics=["Access Control"])]), encoding="utf-8"
    )
    store = Store(base_env["NEWSLETTER_DATABASE_URL"])
    store.reports.upsert_reports(parse_feed(feed.read_bytes(), source=str(feed)))
    store.dispose()
    out = ok(cli("subscribers", "add", "ann@example.org", "--topics", "access control;Acess Control"))
    assert "no report has the topic(s) 'Acess Control'" in out and "Reports have: Access Control" in out
    listing = tmp_path / "list.csv"
    listing.write_text(
        "email,topics\nb@example.org,Drones\nc@example.org,Drones\nd@example.org,Access Control\n",
        encoding="utf-8",
    )
    out = ok(cli("subscribers", "import", str(listing)))
    assert "'Drones' (2 rows)" in out
