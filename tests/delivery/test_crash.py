"""Crash safety: `python -m newsletter send` killed with SIGKILL at seeded random points,
then `newsletter send --resume` until the edition ends.

The sender runs as a real subprocess configured through the environment, against a sink
started in this process; the database and the sink's Maildir are then inspected.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from newsletter.config import SAMPLE_FEED
from newsletter.sink.faults import FaultRule
from newsletter.sink.server import SinkServer
from newsletter.storage.schema import deliveries, editions, subscribers, variants
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import TokenSigner
from tests.factories import SECRET_KEY, service_env
from tests.invariants import Checked, check_delivery, header
from tests.servers import FeedServer

N = 240  # subscribers
CONNECTIONS = 4
SEED = 20250105


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A database file holding N active subscribers, copied for each trial."""
    path = tmp_path_factory.mktemp("crash-template") / "db.sqlite"
    store = Store(f"sqlite:///{path}")
    emails = [
        add_subscriber(store, f"reader{i:04d}@example.org", name=f"Reader {i}")[0].email for i in range(N)
    ]
    store.dispose()
    return path, emails


class Trial:
    def __init__(self, root: Path, template: Path, *, feed: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True)
        for suffix in ("", "-wal", "-shm"):
            if Path(str(template) + suffix).exists():
                shutil.copy(str(template) + suffix, root / f"db.sqlite{suffix}")
        self.sink = SinkServer(maildir=root / "maildir", smtp_port=0, max_messages=20 * N)
        self.sink.start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        self.env.update(
            service_env(
                root,
                smtp_port=self.sink.port,
                NEWSLETTER_DELIVERY_BATCH_SIZE="20",
                NEWSLETTER_SMTP_TIMEOUT="5",
                NEWSLETTER_SMTP_CONNECTIONS=str(CONNECTIONS),
                NEWSLETTER_REPORTS_FEED=feed,
            ),
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
        )
        self.logs: list[str] = []
        # A plain engine for looking (a Store would run its schema check on every open).
        self.engine = sa.create_engine(self.env["NEWSLETTER_DATABASE_URL"])

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.root / f"run-{len(self.logs)}.log"
        self.logs.append(str(log))
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "newsletter", "-v", *args],
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return "\n".join(f"--- {p}\n" + Path(p).read_text(errors="replace") for p in self.logs)

    def store(self) -> Store:
        return Store(self.env["NEWSLETTER_DATABASE_URL"])

    def check(self, key: str, **kwargs: Any) -> Checked:
        """The delivery invariants for edition ``key``, read through a fresh Store."""
        store = self.store()
        try:
            return check_delivery(store, TokenSigner(SECRET_KEY), self.sink.messages(), key, **kwargs)
        finally:
            store.dispose()

    def stored(self, count: int) -> threading.Event:
        """An event set (on the sink's thread) once the sink holds ``count`` messages."""
        reached = threading.Event()

        def on_message(_message: Any) -> None:
            if len(self.sink.store) >= count:
                reached.set()

        self.sink.on_message = on_message
        return reached

    def query(self, statement: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(statement).all())

    def subscriber_status(self, email: str) -> str:
        [row] = self.query(sa.select(subscribers.c.status).where(subscribers.c.email == email))
        return str(row.status)

    def edition_status(self, key: str) -> str | None:
        rows = self.query(sa.select(editions.c.status).where(editions.c.key == key))
        return rows[0].status if rows else None

    def finish(self, key: str) -> None:
        """`send --resume` until the edition ends (or `send --key` if the kill came before it existed).

        Run right after the kill: the dead sender's send lock must not block the resume."""
        for _ in range(4):
            status = self.edition_status(key)
            if status in ("sent", "skipped", "failed"):
                return
            proc = self.spawn("send", "--resume") if status is not None else self.spawn("send", "--key", key)
            rc = proc.wait(timeout=90)
            assert rc == 0, self.output()
            if status is not None:
                assert f"Resuming edition {key}" in " ".join(Path(self.logs[-1]).read_text().split()), (
                    self.output()
                )
        raise AssertionError(f"edition {key} did not end after 4 resumes\n{self.output()}")

    def close(self) -> None:
        self.engine.dispose()
        self.sink.stop()


def kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL and reap (a zombie would still look alive to the recovery); True if it was running."""
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return running


def wait_for(event: threading.Event, proc: subprocess.Popen[bytes], *, timeout: float = 60) -> None:
    """Wait for ``event``, or for ``proc`` to end first (it finished or died: nothing left to kill)."""
    ended = threading.Thread(target=lambda: (proc.wait(), event.set()), daemon=True)
    ended.start()
    assert event.wait(timeout), "the sender never reached the kill point"


def poll_until(predicate: Any, proc: subprocess.Popen[bytes], *, timeout: float = 60) -> None:
    """Poll ``predicate`` (a look at the database) until it holds or ``proc`` ends.

    Only for a point inside the sender process that sends no signal out; see its one user.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            return  # it finished (or died) before the point: nothing left to kill
        assert time.monotonic() < deadline, "the sender never reached the kill point"
        time.sleep(0.002)


def kill_points() -> list[tuple[str, float]]:
    rng = random.Random(SEED)
    points: list[tuple[str, float]] = [("seconds", 0.05)]  # very early: before the process did anything
    points.append(("messages", 1))  # right after the first delivery
    points += [("messages", rng.randint(2, N - 2)) for _ in range(3)]
    points.append(("messages", N - 2))  # very late
    return points


@pytest.mark.parametrize("point", kill_points(), ids=lambda p: f"{p[0]}-{p[1]:g}")
def test_sigkill_then_resume_delivers_everyone_once_with_bounded_repeats(template_db, tmp_path: Path, point):
    template, emails = template_db
    trial = Trial(tmp_path / "trial", template)
    key = "crash"
    try:
        # About 15 ms per message over 4 connections: the whole send takes about a second.
        trial.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.015))
        kind, value = point
        reached = trial.stored(int(value)) if kind == "messages" else None
        proc = trial.spawn("send", "--key", key)
        if reached is not None:
            wait_for(reached, proc)
        else:
            # A point in time, not an event: killed this long after the start, whatever it was doing.
            try:
                proc.wait(timeout=value)
            except subprocess.TimeoutExpired:
                pass
        was_running = kill(proc)
        assert was_running or proc.returncode == 0, trial.output()

        # What the database confirmed as sent before the kill.
        confirmed = {
            r.message_id
            for r in trial.query(
                sa.select(deliveries.c.message_id)
                .join(editions, editions.c.id == deliveries.c.edition_id)
                .where(editions.c.key == key, deliveries.c.state == "sent")
            )
        }
        received_before = len(trial.sink.store)
        trial.sink.faults.clear()
        trial.finish(key)

        checked = trial.check(key, expected=emails, max_duplicates=CONNECTIONS)
        assert checked.states() == {"sent": N}, "every subscriber gets the digest"
        assert trial.edition_status(key) == "sent"
        again = [
            r.email for r in checked.rows if r.message_id in confirmed and len(checked.by_row[r.id]) != 1
        ]
        assert not again, f"rows confirmed sent before the kill were sent again: {again}"
        print(
            f"kill at {kind}={value}: {received_before} received before, {len(confirmed)} confirmed,"
            f" {checked.duplicates} repeats"
        )
    finally:
        trial.close()


# -- crash windows outside the send loop ---------------------------------------------------


@pytest.fixture
def slow_feed() -> Iterator[FeedServer]:
    """The sample feed over HTTP, holding each request until released."""
    feed = FeedServer(held=True)
    try:
        yield feed
    finally:
        feed.close()


def test_kill_while_fetching_the_feed_then_resume_sends_the_edition(
    template_db, tmp_path: Path, slow_feed: FeedServer
):
    template, emails = template_db
    trial = Trial(tmp_path / "trial", template, feed=slow_feed.serve("/feed.xml", SAMPLE_FEED.read_bytes()))
    key = "fetching"
    try:
        proc = trial.spawn("send", "--key", key)
        assert slow_feed.requested.wait(30), trial.output()
        assert trial.edition_status(key) == "planned"  # the edition exists; its reports do not yet
        kill(proc)
        slow_feed.release.set()
        trial.finish(key)
        checked = trial.check(key, expected=emails)
        assert trial.edition_status(key) == "sent", "the edition is sent, not skipped"
        assert checked.states() == {"sent": N}
    finally:
        trial.close()


def test_kill_while_rendering_then_resume_sends_the_full_digest(template_db, tmp_path: Path):
    template, emails = template_db
    key = "rendering"
    for attempt in range(3):
        trial = Trial(tmp_path / f"trial-{attempt}", template)
        try:
            proc = trial.spawn("send", "--key", key)
            empty = sa.select(variants.c.id).where(variants.c.subject == "")
            rendered = sa.select(variants.c.id).where(variants.c.subject != "")
            hit: list[bool] = []

            def at_point(trial: Trial = trial, empty=empty, rendered=rendered, hit=hit) -> bool:
                if trial.query(empty):
                    hit.append(True)
                    return True
                return bool(trial.query(rendered))

            # The window between writing a variant and storing its render sends nothing out of
            # the sender process (no mail yet, no callback across processes): it is looked for
            # in the database, and caught again on a fresh trial if the render won the race.
            poll_until(at_point, proc)
            kill(proc)
            if not hit:
                continue  # the render finished before we looked: try again
            trial.finish(key)
            trial.check(key, expected=emails)
            subjects = {header(m, "Subject") for m in trial.sink.messages()}
            assert "" not in subjects, "digests went out without a subject (and without reports)"
            return
        finally:
            trial.close()
    pytest.fail("never caught the sender between creating and rendering a variant")


def test_hard_bounce_journaled_before_a_kill_still_suppresses(template_db, tmp_path: Path):
    template, emails = template_db
    trial = Trial(tmp_path / "trial", template)
    trial.env["NEWSLETTER_DELIVERY_BATCH_SIZE"] = (
        "500"  # no commit before the kill: results only in the journal
    )
    trial.env["NEWSLETTER_DELIVERY_COMMIT_INTERVAL"] = "3600"
    key = "journaled"
    victim = emails[1]
    try:
        trial.sink.faults.add(FaultRule(stage="rcpt", code=550, text="5.1.1 No such user", to=victim))
        trial.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.015))
        forty = trial.stored(40)
        proc = trial.spawn("send", "--key", key)
        wait_for(forty, proc)
        assert kill(proc), "killed while sending"
        assert not trial.query(sa.select(deliveries.c.id).where(deliveries.c.state == "failed")), (
            "nothing committed yet"
        )
        trial.sink.faults.clear()
        trial.finish(key)
        checked = trial.check(key, expected=emails, max_duplicates=CONNECTIONS, never=[victim])
        row = checked.row(victim)
        assert (row.state, row.last_code) == ("failed", 550)
        assert trial.subscriber_status(victim) == "bounced", "a 5.1.1 hard bounce suppresses at once"
        assert "5.1.1" in row.last_reply, f"the reply text is kept: {row.last_reply!r}"
    finally:
        trial.close()
