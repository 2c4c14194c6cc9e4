"""Worker-fleet failure trials on PostgreSQL, by hand: one scenario against one checkout.

    NEWSLETTER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python tests/pg/fleet_trials.py --scenario stop --code /path/to/checkout [--repeat 3]

Runs the scenario with the checkout's own code (its ``.venv/bin/python``, its package, its
``tests/factories.py``), so the same failure can be compared before and after a change. Each
trial plans one edition on a fresh database, drains it with real ``newsletter worker``
processes into the checkout's SMTP sink, injects the failure, then prints one line: readers,
copies received, extra copies, readers missing, readers who got two different Message-IDs,
rows whose state disagrees with the sink, the final row states and the edition's status.

Scenarios (the failures of issue 18):

  stop      a worker paused (SIGSTOP) past its lease while another takes its rows, then resumed
  stopint   the same, and the resumed worker is stopped (Ctrl-C, SIGINT) right after it wakes
  slow      a healthy worker under smtp.rate_limit whose batch outlasts its lease, a second starts
  recover   a worker SIGKILLed mid-send, three workers start (and recover) at once
  recoverwarm  three polling workers, already running, meet at once an edition a dead sender of
            this machine holds 600 rows of (its journal says 200 were sent)
  machine   a worker on "another machine" (its own UTS host name and journal dir) SIGKILLed
            mid-send, a worker here takes over after the lease; then the dead machine's worker
            starts again (does its journal get handled?)
  restart   PostgreSQL restarted (pg_ctlcluster) under two busy workers and an idle one
  once      `worker --once` while another live worker holds rows, and for a paused edition

``machine`` needs ``unshare`` (root); ``restart`` needs Debian's pg_ctlcluster (root) and
restarts the local server. Nothing here is run by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

SCENARIOS = ("stop", "stopint", "slow", "recover", "recoverwarm", "machine", "restart", "once")
HERE = Path(__file__).resolve()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument(
        "--code", type=Path, default=HERE.parents[2], help="checkout to run (default: this one)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--readers", type=int, default=0, help="readers per trial (default: the scenario's)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A shell starts background jobs with SIGINT ignored, and workers would inherit that: the
    # scenarios stop workers with Ctrl-C (SIGINT), so give them the usual handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = args.code.resolve()
    if not args.inner:
        # Re-run under the checkout's interpreter, with its package and tests first on the path.
        python = code / ".venv" / "bin" / "python"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NEWSLETTER_") or k == "NEWSLETTER_TEST_DATABASE_URL"
        }
        env["PYTHONPATH"] = str(code)
        argv = [
            str(python),
            str(HERE),
            "--inner",
            "--scenario",
            args.scenario,
            "--code",
            str(code),
            "--repeat",
            str(args.repeat),
            "--readers",
            str(args.readers),
        ]
        return subprocess.call(argv, env=env, cwd=code)
    sys.path.insert(0, str(code))
    results = [Trial(code, args.scenario, args.readers).run() for _ in range(args.repeat)]
    for number, result in enumerate(results, 1):
        print(f"trial {number}: {json.dumps(result)}", flush=True)
    extras = [r["extra_copies"] for r in results]
    missing = [r["missing"] for r in results]
    print(f"{args.scenario} @ {code.name}: extra copies {extras}, missing {missing}", flush=True)
    return 0


class Trial:
    def __init__(self, code: Path, scenario: str, readers: int) -> None:
        self.code = code
        self.scenario = scenario
        self.readers = readers
        self.notes: dict[str, Any] = {}
        self.journaled: set[str] = set()  # Message-IDs a dead sender's journal says it sent (not in the sink)

    # -- set-up and measurement ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        from newsletter.sink.server import SinkServer

        server = os.environ["NEWSLETTER_TEST_DATABASE_URL"]
        admin = sa.create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
        name = f"nl_trial_{secrets.token_hex(5)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.url = make_url(server).set(database=name).render_as_string(hide_password=False)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"fleet-{self.scenario}-"))
        self.sink = SinkServer(maildir=self.tmp / "maildir", smtp_port=0, max_messages=50_000).start()
        self.procs: list[subprocess.Popen[str]] = []
        try:
            getattr(self, f"scenario_{self.scenario}")()
            return self.measure()
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                    proc.wait()
            self.sink.stop()
            if hasattr(self, "service"):
                self.service.close()
            admin.dispose()
            admin = sa.create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    def env(self, **overrides: str) -> dict[str, str]:
        from tests.factories import service_env

        env = service_env(self.tmp, smtp_port=self.sink.port, NEWSLETTER_DATABASE_URL=self.url)
        env.update({f"NEWSLETTER_{k.upper()}": v for k, v in overrides.items()})
        return env

    def plan(self, readers: int, **overrides: str) -> None:
        from newsletter.service import Service
        from tests.factories import bulk_subscribers, settings_from_env, utc

        self.n = self.readers or readers
        self.base = overrides
        self.service = Service(settings_from_env(self.tmp, self.env(**overrides)))
        bulk_subscribers(self.service.store, self.n)
        result = self.service.runner.run(key=f"trial-{self.scenario}", as_of=utc(2018, 8, 22), send=False)
        self.edition = result.edition

    def worker(self, *args: str, host: str = "", **overrides: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(self.env(**{**self.base, **overrides}))
        env["PYTHONPATH"] = str(self.code)
        cmd = [str(self.code / ".venv" / "bin" / "python"), "-m", "newsletter", "worker", *args]
        if host:  # another machine: its own host name (a UTS namespace), the same pid space
            cmd = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *cmd]
        proc = subprocess.Popen(
            cmd, env=env, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def received(self) -> int:
        return len(self.sink.messages())

    def wait_sending(self, count: int) -> None:
        """Wait for ``count`` messages; note the rate from the first one (messages a second)."""
        self.wait_received(1)
        first = time.monotonic()
        self.wait_received(count)
        self.notes["rate_msg_s"] = round((self.received() - 1) / (time.monotonic() - first), 1)

    def wait_received(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.received() < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {count} messages (have {self.received()})")
            time.sleep(0.02)

    def finish(self, proc: subprocess.Popen[str], label: str, timeout: float = 300) -> None:
        try:
            out, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:  # say so and go on measuring
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            out, err = proc.communicate()
            hung = True
        tail = [line for line in (out + err).splitlines() if line.strip()][-3:]
        self.notes[label] = {
            "exit": proc.returncode,
            "hung": hung,
            "traceback": "Traceback" in err,
            "tail": [t[:160] for t in tail],
        }

    def counts(self) -> Counter[str]:
        import sqlalchemy as sa

        with self.service.store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT state, count(*) FROM deliveries WHERE edition_id = :e GROUP BY state"),
                {"e": self.edition.id},
            ).all()
        return Counter({s: int(n) for s, n in rows})

    def measure(self) -> dict[str, Any]:
        import sqlalchemy as sa

        self.sink.flush()
        messages = self.sink.messages()
        copies = Counter(str(m.headers["Message-ID"]) for m in messages)
        ids_per_reader: dict[str, set[str]] = {}
        for m in messages:
            for rcpt in m.rcpt_tos:
                ids_per_reader.setdefault(rcpt.lower(), set()).add(str(m.headers["Message-ID"]))
        self.service.store.engine.dispose()
        with self.service.store.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT d.message_id, d.state, s.email FROM deliveries d JOIN subscribers s"
                    " ON s.id = d.subscriber_id WHERE d.edition_id = :e"
                ),
                {"e": self.edition.id},
            ).all()
            status = conn.execute(
                sa.text("SELECT status FROM editions WHERE id = :e"), {"e": self.edition.id}
            ).scalar()
        states = Counter(r.state for r in rows)
        missing = sum(1 for r in rows if r.message_id not in copies and r.message_id not in self.journaled)
        sent_not_received = sum(
            1
            for r in rows
            if r.state == "sent" and r.message_id not in copies and r.message_id not in self.journaled
        )
        if self.journaled:
            self.notes["journaled_sent_again"] = sum(1 for m in copies if m in self.journaled)
        received_not_sent = sum(1 for r in rows if r.state != "sent" and r.message_id in copies)
        return {
            "readers": len(rows),
            "received": sum(copies.values()),
            "extra_copies": sum(copies.values()) - len(copies),
            "missing": missing,
            "two_message_ids": sum(1 for ids in ids_per_reader.values() if len(ids) > 1),
            "sent_not_received": sent_not_received,
            "received_not_sent": received_not_sent,
            "states": dict(sorted(states.items())),
            "edition": status,
            **self.notes,
        }

    # -- scenarios ---------------------------------------------------------------------

    def slow_sink(self, delay: float = 0.01) -> None:
        from newsletter.sink.faults import FaultRule

        self.sink.faults.add(FaultRule(stage="data", action="delay", delay=delay))

    def scenario_stop(self, *, interrupt: bool = False) -> None:
        """Lease 10 s, batch 500, 2 connections; SIGSTOP after 100 messages, a second worker once
        the lease has run out (12 s), SIGCONT when it is done."""
        self.plan(1500, delivery_lease="10", delivery_batch_size="500", smtp_connections="2")
        self.slow_sink()
        first = self.worker("--once")
        self.wait_sending(100)
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(12)
        second = self.worker("--once")
        self.finish(second, "second")
        os.kill(first.pid, signal.SIGCONT)
        if interrupt:
            time.sleep(0.3)
            os.kill(first.pid, signal.SIGINT)
        self.finish(first, "stopped")

    def scenario_stopint(self) -> None:
        self.scenario_stop(interrupt=True)

    def scenario_slow(self) -> None:
        """A worker at smtp.rate_limit 20/s claims 300 rows (15 s of sending) under a 3 s lease;
        a second, unlimited worker starts 4 s later."""
        self.plan(600, delivery_lease="3", delivery_batch_size="300")
        slow = self.worker("--once", smtp_rate_limit="20")
        self.wait_received(5)
        time.sleep(4)
        fast = self.worker("--once")
        self.finish(fast, "fast")
        self.finish(slow, "slow")

    def scenario_recover(self) -> None:
        """A worker (batch 500, 2 connections) SIGKILLed after 150 messages; three workers
        (batch 100) start at once, each recovering the edition first. With 3,000 readers some
        rows are still pending; with --readers 1500 the dead worker held every row."""
        self.plan(3000, delivery_batch_size="500", smtp_connections="2")
        self.slow_sink()
        doomed = self.worker("--once")
        self.wait_received(150)
        doomed.kill()
        doomed.wait()
        self.notes["killed_after"] = self.received()
        trio = [self.worker("--once", delivery_batch_size="100") for _ in range(3)]
        for index, proc in enumerate(trio):
            self.finish(proc, f"recovering{index}")

    def scenario_recoverwarm(self) -> None:
        """A dead sender of this machine (pid 999999) holds 600 of 1,500 rows under a long lease,
        its journal saying 200 were sent; the edition is held paused while three workers
        (batch 100, poll 0.1 s) start, then set sending: they find it within 0.1 s of each other."""
        import socket

        import sqlalchemy as sa

        self.plan(1500, delivery_batch_size="100")
        self.slow_sink(0.002)
        with self.service.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE editions SET status = 'paused' WHERE id = :e"), {"e": self.edition.id}
            )
            ids = (
                conn.execute(
                    sa.text("SELECT id FROM deliveries WHERE edition_id = :e ORDER BY id LIMIT 600"),
                    {"e": self.edition.id},
                )
                .scalars()
                .all()
            )
            conn.execute(
                sa.text(
                    "UPDATE deliveries SET state = 'sending', claimed_by = :by,"
                    " lease_until = now() + interval '1 hour' WHERE id = ANY(:ids)"
                ),
                {"by": f"{socket.gethostname()}:999999", "ids": list(ids)},
            )
            self.journaled = set(
                conn.execute(
                    sa.text("SELECT message_id FROM deliveries WHERE id = ANY(:ids)"),
                    {"ids": list(ids[:200])},
                ).scalars()
            )
        journal = self.tmp / "journal"
        journal.mkdir(exist_ok=True)
        (journal / f"edition-{self.edition.id}.999999.journal").write_text(
            "".join(f"S {i}\nR {i} sent 250 ok\n" for i in ids[:200]), encoding="utf-8"
        )
        trio = [self.worker("--poll", "0.1") for _ in range(3)]
        time.sleep(6)  # all three started and polling
        with self.service.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE editions SET status = 'sending' WHERE id = :e"), {"e": self.edition.id}
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(p.poll() is None for p in trio):
            left = self.counts()
            if not (left.get("pending") or left.get("sending")):
                break
            time.sleep(0.3)
        time.sleep(1)
        self.notes["alive_at_end"] = sum(p.poll() is None for p in trio)
        for index, proc in enumerate(trio):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            self.finish(proc, f"recovering{index}", timeout=60)
        self.notes["journal_left"] = len(list(journal.glob("*.journal")))

    def scenario_machine(self) -> None:
        """Machine A (its own host name and journal dir; lease 4 s, batch 500, 2 connections)
        SIGKILLed after 200 messages; a worker here (its own journal dir) starts after the lease;
        then A's worker starts again, on A, with A's journal dir."""
        self.plan(1500, delivery_lease="4", delivery_batch_size="500", smtp_connections="2")
        self.slow_sink()
        a_dir, b_dir = self.tmp / "journal-a", self.tmp / "journal-b"
        doomed = self.worker("--once", host="machine-a", delivery_journal_dir=str(a_dir))
        self.wait_sending(200)
        doomed.kill()
        doomed.wait()
        self.notes["killed_after"] = self.received()
        time.sleep(5)
        self.finish(self.worker("--once", delivery_journal_dir=str(b_dir)), "takeover")
        self.notes["a_journal_after_takeover"] = len(list(a_dir.glob("*.journal")))
        self.finish(self.worker("--once", host="machine-a", delivery_journal_dir=str(a_dir)), "a_again")
        self.notes["a_journal_after_a_restarts"] = len(list(a_dir.glob("*.journal")))

    def scenario_restart(self) -> None:
        """Two busy workers (batch 100, lease 5 s) and an idle one (poll 0.5 s); PostgreSQL restarted
        after 300 messages; up to 90 s for the edition to end without anyone's help."""
        self.plan(1500, delivery_lease="5", delivery_batch_size="100", smtp_connections="1")
        self.slow_sink()
        busy = [self.worker("--once") for _ in range(2)]
        idle = self.worker("--poll", "0.5")
        self.wait_received(300)
        version = sorted(os.listdir("/etc/postgresql"))[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        for index, proc in enumerate(busy):
            self.finish(proc, f"busy{index}", timeout=120)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and idle.poll() is None:
            try:
                left = self.counts()
            except Exception:  # the test's own pooled connection died with the server
                self.service.store.engine.dispose()
                continue
            if not (left.get("pending") or left.get("sending")):
                break
            time.sleep(0.5)
        self.notes["idle_alive_after"] = idle.poll() is None
        if idle.poll() is None:
            idle.send_signal(signal.SIGINT)
        self.finish(idle, "idle", timeout=60)

    def scenario_once(self) -> None:
        """A live worker at 2 msg/s holds 50 rows (lease 300 s); `worker --once` drains the rest;
        then the edition is paused and `worker --once` runs again."""
        import sqlalchemy as sa

        self.plan(200, delivery_batch_size="50")
        holder = self.worker("--once", smtp_rate_limit="2")
        self.wait_received(1)
        self.finish(self.worker("--once"), "once_with_rows_held")
        self.notes["once_with_rows_held"]["says_other_senders"] = "other live senders" in " ".join(
            self.notes["once_with_rows_held"]["tail"]
        )
        with self.service.store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE editions SET status = 'paused', reason = 'paused by the trial' WHERE id = :e"
                ),
                {"e": self.edition.id},
            )
        self.finish(self.worker("--once"), "once_paused")
        holder.send_signal(signal.SIGINT)
        self.finish(holder, "holder")
        with self.service.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE editions SET status = 'sending' WHERE id = :e"), {"e": self.edition.id}
            )
        self.finish(self.worker("--once"), "once_after")


if __name__ == "__main__":
    sys.exit(main())
