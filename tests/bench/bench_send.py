"""Send benchmark: the whole pipeline against the raw SMTP pipe, in one run (run by hand, not in CI).

    .venv/bin/python tests/bench/bench_send.py                      # 100,000 subscribers, every target
    .venv/bin/python tests/bench/bench_send.py --subscribers 20000 --target smtp-sink
    .venv/bin/python tests/bench/bench_send.py --scale-check        # peak RSS at 1,000,000 vs 100,000
    .venv/bin/python tests/bench/bench_send.py --rate-check         # smtp.rate_limit=200 held over 30 s
    .venv/bin/python tests/bench/bench_send.py --profile            # where the pipeline's CPU goes
    .venv/bin/python tests/bench/bench_send.py --dkim-check         # DKIM off, ed25519, rsa: msg/s and CPU

What it measures, side by side and against the same SMTP server each time:

(a) baseline: plain smtplib, ``--connections`` threads with one connection each, sending
    pre-built bytes of the size of a real digest (one rendered by the service);
(b) pipeline: ``EditionRunner.run`` -- what ``newsletter send`` runs -- on a fresh SQLite
    database holding N subscribers (bulk-inserted with SQLAlchemy; topics varied so the
    edition has several variants) and the bundled sample feed: selection, rendering,
    outbox rows, per-recipient splicing, journal, batch commits.

Each measurement runs in its own child process (this script with ``--child``), so its
CPU time (getrusage) and its peak RSS (ru_maxrss) belong to that measurement alone; the
SMTP servers run in their own processes too.

CPU per recipient outside SMTP I/O = (CPU of (b) - CPU of (a) for the same number of
messages to the same server) / N: the baseline's CPU is what the SMTP conversation itself
costs a Python client. Also printed: the CPU of the pipeline's main thread / N (planning,
rendering, outbox writes, claims, splicing and commits all run there; the SMTP threads'
journal writes do not), and the CPU of the pipeline's other threads (its SMTP connections)
per message beside the baseline's. The pipeline's connections cost less than smtplib's
``sendmail`` (the prepared bytes are already dot-stuffed with CRLF line ends, so no pass
over each 20 KB message looks for either), so the difference undercounts the main thread:
read both figures.

Servers (each started and stopped by this script):

* Postfix ``smtp-sink``: ``DEBIAN_FRONTEND=noninteractive apt-get install -y postfix``
  provides /usr/sbin/smtp-sink; the script runs
  ``smtp-sink -c -u postfix 127.0.0.1:<port> 1000`` (``-u`` only as root);
* our sink: ``newsletter.sink.server.SinkServer`` (persists every message to a Maildir);
* MailDev: ``npm install maildev@3`` into ``~/.cache/newsletter-bench/maildev`` (done by the
  script on first use; needs node and npm), run with its SMTP on a free port, web UI off,
  persisting to a directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PROJECT = HERE.parents[2]
sys.path.insert(0, str(PROJECT))
from tests.servers import free_port  # noqa: E402  (needs the project on sys.path)

MAILDEV_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "newsletter-bench" / "maildev"
SMTP_SINK_CANDIDATES = ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")
# Topic choices cycled over the subscribers: each distinct report set is one variant.
TOPIC_MIX = (
    (),
    ("China",),
    ("Business",),
    ("Government",),
    ("China", "Government"),
    ("Testing", "Video Analytics"),
    ("Access Control", "Cybersecurity", "Networking"),
    ("Business", "Testing"),
)
SECRET = "bench-secret-key-at-least-32-bytes-long"  # links need 32 bytes (config refuses fewer)
TARGETS = {
    "dkim_ed25519_ratio": 0.8,
    "rss_ratio": 1.3,
    "pipeline_ratio": 0.8,
    "cpu_us": 50.0,
    "render_ms": 20.0,
    "sink_vs_maildev": 1.25,
    "rate_tolerance": 0.05,
}


# -- small utilities ---------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)  # the greeting
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def settings_env(
    db: Path, port: int, work: Path, *, connections: int, rate_limit: float = 0.0
) -> dict[str, str]:
    return {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{db}",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_CONNECTIONS": str(connections),
        "NEWSLETTER_SMTP_RATE_LIMIT": str(rate_limit),
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(work / "journal"),
        "NEWSLETTER_REPORTS_SETTLE": "0",
    }


def fmt(n: float, digits: int = 0) -> str:
    return f"{n:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# -- setup: a subscriber database ---------------------------------------------------------------


def make_subscriber_db(path: Path, count: int) -> float:
    """A fresh SQLite database (schema through the service's own migrations) with ``count`` active
    subscribers."""
    import sqlalchemy as sa

    from newsletter.storage.schema import subscribers
    from newsletter.storage.store import Store

    started = time.monotonic()
    store = Store(f"sqlite:///{path}")
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    with store.engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(count):
            batch.append(
                {
                    "email": f"reader{i:07d}@example.org",
                    "name": f"Reader {i}",
                    "status": "active",
                    "topics": list(TOPIC_MIX[i % len(TOPIC_MIX)]),
                    "cadence": "daily",
                    "paused": False,
                    "created_at": now,
                    "confirmed_at": now,
                    "updated_at": now,
                    "status_reason": "",
                }
            )
            if len(batch) == 500:  # multi-row statements: SQLite's search index flushes once per statement
                conn.execute(subscribers.insert().values(batch))
                batch = []
        if batch:
            conn.execute(subscribers.insert().values(batch))
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    assert sa  # imported for the side effect of loading SQLAlchemy once
    return time.monotonic() - started


def copy_db(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(src, dst)


# -- a real digest's bytes ---------------------------------------------------------------------


def sample_message() -> tuple[bytes, int, list[float]]:
    """Bytes of a real digest (all topics, sample feed) and render+inline times per variant (ms)."""
    from dataclasses import replace
    from datetime import datetime

    from newsletter.config import load_settings
    from newsletter.content.feed import load_reports
    from newsletter.content.planner import Ledger, select_reports
    from newsletter.content.render import DigestRenderer
    from newsletter.delivery.message import PreparedMessage
    from newsletter.models import Subscriber, SubscriberStatus

    settings = load_settings(env={"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_REPORTS_SETTLE": "0"})
    reports = sorted(
        load_reports(settings.reports.feed, timeout=5, teaser_length=settings.reports.teaser_length).reports,
        key=lambda r: r.published,
        reverse=True,
    )
    renderer = DigestRenderer(settings)
    times: list[float] = []
    selections = []
    # The ledger as planning reads it: every report numbered, readers never planned (first digests).
    numbered = [replace(r, seq=n) for n, r in enumerate(reversed(reports), start=1)]
    ledger = Ledger(len(numbered), numbered, list(reversed(numbered)))
    for topics in TOPIC_MIX:
        who = Subscriber(
            id=1, email="reader@example.org", name="Reader", status=SubscriberStatus.ACTIVE, topics=topics
        )
        sel = select_reports(who, ledger, max_reports=settings.digest.max_reports)
        if sel.reports and sel.key not in {s.key for s in selections}:
            selections.append(sel)
    t = time.perf_counter()
    renderer.render(
        selections[0].reports, archive_url="https://news.example.com/archive/0"
    )  # the first: template compile, CSS parse
    cold = (time.perf_counter() - t) * 1000
    for rep in range(5):
        for i, sel in enumerate(selections):  # like an edition: each variant once, the renderer warm
            t = time.perf_counter()
            renderer.render(sel.reports, archive_url=f"https://news.example.com/archive/{rep}-{i}")
            times.append((time.perf_counter() - t) * 1000)
    times.insert(0, cold)
    digest = renderer.render(selections[0].reports, archive_url="https://news.example.com/archive/1")
    prepared = PreparedMessage(
        from_name=settings.mail.from_name,
        from_address=settings.mail.from_address,
        subject=digest.subject,
        text=digest.text,
        html=digest.html,
        list_id=settings.mail.list_id,
        extra_headers=(("X-Newsletter-Edition", "bench"),),
    )
    data = prepared.for_recipient(
        to_address="reader0000001@example.org",
        to_name="Reader 1",
        message_id="<bench.0@example.com>",
        date=datetime.now(UTC),
        unsubscribe_url="https://news.example.com/unsubscribe/" + "x" * 60,
        preferences_url="https://news.example.com/preferences/" + "y" * 60,
    )
    return data, len(selections), times


# -- children: one measurement per process ------------------------------------------------------


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """(a): plain smtplib, one connection per thread, pre-built bytes."""
    data = Path(args.message).read_bytes()
    count, connections = args.count, args.connections
    lock = threading.Lock()
    next_index = [0]
    errors: list[str] = []

    def work() -> None:
        smtp = smtplib.SMTP("127.0.0.1", args.port, timeout=60)
        try:
            while True:
                with lock:
                    i = next_index[0]
                    if i >= count:
                        return
                    next_index[0] += 1
                try:
                    smtp.sendmail(f"bounces+{i}@example.com", [f"reader{i:07d}@example.org"], data)
                except smtplib.SMTPException as exc:
                    errors.append(str(exc))
                    return
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {
        "count": count - len(errors),
        "wall": wall,
        "cpu": cpu,
        "rss_mb": peak_rss_mb(),
        "errors": errors[:3],
    }


def child_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """(b): EditionRunner.run -- the code path of `newsletter send` -- on a prepared database."""
    from newsletter.config import load_settings
    from newsletter.service import Service

    work = Path(args.work)
    os.chdir(work)  # no ./newsletter.toml from the caller's directory
    env = settings_env(
        Path(args.db), args.port, work, connections=args.connections, rate_limit=args.rate_limit
    )
    env.update(dkim_env(args.dkim))
    settings = load_settings(env=env)
    service = Service(settings)
    runner = service.runner
    marks: dict[str, float] = {}
    sent_at: list[float] = []

    def planned(total: int) -> None:
        marks["planned_wall"] = time.perf_counter()
        marks["planned_cpu"] = cpu_seconds()
        marks["planned_thread"] = time.thread_time()
        marks["planned_total"] = total
        marks["planned_rss"] = peak_rss_mb()

    done = [0]

    def outcome(o: Any) -> None:
        done[0] += 1
        if args.rate_limit and o.state.value == "sent":
            sent_at.append(time.monotonic())

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    rss_before = peak_rss_mb()
    cpu0, thread0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
    timeline: list[tuple[float, int, float]] = []

    def watch() -> None:
        """Every 10 s: progress and RSS; past --max-seconds, report what was measured so far and stop."""
        while True:
            time.sleep(10)
            elapsed = time.perf_counter() - t0
            timeline.append((round(elapsed, 1), done[0], round(current_rss_mb(), 1)))
            print(
                f"    [{elapsed:6.0f} s] {done[0]:>9,} results,"
                f" RSS {current_rss_mb():.0f} MB (peak {peak_rss_mb():.0f} MB)",
                file=sys.stderr,
                flush=True,
            )
            if args.max_seconds and elapsed > args.max_seconds:
                partial = {
                    "partial": True,
                    "wall": elapsed,
                    "cpu": cpu_seconds() - cpu0,
                    "main_thread_cpu": 0.0,
                    "plan_wall": marks.get("planned_wall", t0) - t0,
                    "plan_cpu": marks.get("planned_cpu", cpu0) - cpu0,
                    "plan_thread_cpu": 0.0,
                    "count": done[0],
                    "counts": {"results so far": done[0]},
                    "variants": 0,
                    "status": "stopped by --max-seconds",
                    "rss_mb": peak_rss_mb(),
                    "rss_before_mb": rss_before,
                    "rss_at_planned_mb": marks.get("planned_rss", 0.0),
                    "timeline": timeline,
                    "sent_at": [],
                }
                print(json.dumps(partial), flush=True)
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    if profiler:
        profiler.enable()
    result = runner.run(key="bench", on_planned=planned, on_outcome=outcome)
    if profiler:
        profiler.disable()
    wall, cpu, thread = time.perf_counter() - t0, cpu_seconds() - cpu0, time.thread_time() - thread0
    counts = service.store.editions.delivery_counts(result.edition.id)
    variants = len(service.store.editions.list_variants(result.edition.id))
    service.close()
    out = {
        "wall": wall,
        "cpu": cpu,
        "main_thread_cpu": thread,
        "plan_wall": marks.get("planned_wall", t0) - t0,
        "plan_cpu": marks.get("planned_cpu", cpu0) - cpu0,
        "plan_thread_cpu": marks.get("planned_thread", thread0) - thread0,
        "count": counts.get("sent", 0),
        "counts": counts,
        "variants": variants,
        "status": result.edition.status.value,
        "rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "rss_at_planned_mb": marks.get("planned_rss", 0.0),
        "timeline": timeline,
        "sent_at": sent_at if args.rate_limit else [],
    }
    if profiler:
        import io
        import pstats

        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
        out["profile_tottime"] = stream.getvalue()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(35)
        out["profile_cumulative"] = stream.getvalue()
    return out


def child_sink(args: argparse.Namespace) -> None:
    """Our sink in its own process until stdin closes."""
    from newsletter.sink.server import SinkServer

    server = SinkServer(maildir=Path(args.maildir), smtp_port=args.port, max_messages=args.max_messages)
    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


def run_child(kind: str, **options: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--child", kind]
    for key, value in options.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=None if kind == "pipeline" else subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed ({proc.returncode}):\n{(proc.stderr or '')[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- SMTP servers --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[Any]
    store_dir: Path | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=60)
                    return
                except subprocess.TimeoutExpired:
                    pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def smtp_sink_binary() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((p for p in SMTP_SINK_CANDIDATES if os.access(p, os.X_OK)), None)


def start_smtp_sink() -> Server:
    binary = smtp_sink_binary()
    if binary is None:
        raise SystemExit(
            "Postfix's smtp-sink is not installed. Install it with:\n"
            "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n"
            "(then `dpkg -L postfix | grep smtp-sink` shows /usr/sbin/smtp-sink), or pick --target sink."
        )
    port = free_port()
    # -c: count DATA; backlog 1000. As root it must drop privileges (-u postfix).
    cmd = [binary, "-c"] + (["-u", "postfix"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{port}", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    return Server("smtp-sink", port, proc)


def start_our_sink(work: Path, max_messages: int) -> Server:
    port = free_port()
    maildir = work / f"sink-maildir-{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE),
            "--child",
            "sink",
            "--port",
            str(port),
            "--maildir",
            str(maildir),
            "--max-messages",
            str(max_messages),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("our sink did not start")
    wait_port(port, proc=proc)
    return Server("sink", port, proc, maildir / "new")


def maildev_binary() -> Path:
    binary = MAILDEV_DIR / "node_modules" / ".bin" / "maildev"
    if binary.exists():
        return binary
    if not shutil.which("npm"):
        raise SystemExit(
            "MailDev needs node and npm: sudo apt-get install -y nodejs npm (or pick another --target)"
        )
    MAILDEV_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing maildev@3 into {MAILDEV_DIR} (npm install maildev@3) ...", flush=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "maildev@3"],
        cwd=MAILDEV_DIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


def start_maildev(work: Path) -> Server:
    binary = maildev_binary()
    port = free_port()
    store = work / f"maildev-{port}"
    store.mkdir()
    proc = subprocess.Popen(
        [
            str(binary),
            "--smtp",
            str(port),
            "--ip",
            "127.0.0.1",
            "--disable-web",
            "--mail-directory",
            str(store),
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
    )
    wait_port(port, proc=proc)
    return Server("maildev", port, proc, store)


@contextmanager
def server(name: str, work: Path, max_messages: int) -> Iterator[Server]:
    started = {
        "smtp-sink": start_smtp_sink,
        "sink": lambda: start_our_sink(work, max_messages),
        "maildev": lambda: start_maildev(work),
    }[name]()
    try:
        yield started
    finally:
        started.stop()


def files_in(directory: Path | None) -> int:
    if directory is None or not directory.exists():
        return 0
    return sum(1 for e in os.scandir(directory) if e.is_file())


# -- the modes ---------------------------------------------------------------------------------


def measure_target(
    target: str, args: argparse.Namespace, work: Path, base_db: Path, message: Path
) -> dict[str, Any]:
    n = args.subscribers
    with server(target, work, max_messages=n + 10) as srv:
        base = run_child("baseline", port=srv.port, count=n, connections=args.connections, message=message)
    run_dir = work / f"run-{target}"
    run_dir.mkdir()
    copy_db(base_db, run_dir / "db.sqlite")
    with server(target, work, max_messages=n + 10) as srv:
        pipe = run_child(
            "pipeline", port=srv.port, connections=args.connections, db=run_dir / "db.sqlite", work=run_dir
        )
    (run_dir / "db.sqlite").unlink()
    return {"baseline": base, "pipeline": pipe}


def report_target(target: str, res: dict[str, Any], n: int) -> list[tuple[str, bool, str]]:
    base, pipe = res["baseline"], res["pipeline"]
    a = base["count"] / base["wall"]
    b = pipe["count"] / pipe["wall"]
    send_wall = pipe["wall"] - pipe["plan_wall"]
    extra_cpu_us = (pipe["cpu"] - base["cpu"]) / n * 1e6
    main_us = pipe["main_thread_cpu"] / n * 1e6
    print(f"\n== target {target}: {fmt(n)} recipients, {res['connections']} connections ==")
    print(
        f"  (a) baseline smtplib      {fmt(a):>9} msg/s   wall {base['wall']:.1f} s  CPU {base['cpu']:.1f} s"
        f" ({base['cpu'] / n * 1e6:.0f} us/msg)  peak RSS {base['rss_mb']:.0f} MB"
    )
    print(
        f"  (b) pipeline (send)       {fmt(b):>9} msg/s   wall {pipe['wall']:.1f} s  CPU {pipe['cpu']:.1f} s"
        f" ({pipe['cpu'] / n * 1e6:.0f} us/msg)  peak RSS {pipe['rss_mb']:.0f} MB"
    )
    print(
        f"      of which planning     {pipe['plan_wall']:.1f} s wall,"
        f" {pipe['plan_cpu']:.1f} s CPU ({pipe['plan_cpu'] / n * 1e6:.0f} us/recipient),"
        f" {pipe['variants']} variants;"
        f" sending {send_wall:.1f} s = {fmt(pipe['count'] / send_wall if send_wall > 0 else 0)} msg/s"
    )
    print(f"      rows: {pipe['counts']}, edition {pipe['status']}")
    ratio = b / a if a else 0.0
    print(f"  (b)/(a) = {ratio:.2f}")
    print(
        f"  CPU outside SMTP I/O: {extra_cpu_us:.0f} us/recipient  [(CPU of b - CPU of a) / N];"
        f" main thread alone: {main_us:.0f} us/recipient"
    )
    # The split that says how the difference comes about: the pipeline's other threads are its SMTP
    # connections (plus a lease timer); their CPU against smtplib's for the same messages.
    print(
        f"  CPU by part: pipeline main thread {main_us:.0f} us/recipient"
        f" (planning {pipe['plan_cpu'] / n * 1e6:.0f}),"
        f" its SMTP connection threads {(pipe['cpu'] - pipe['main_thread_cpu']) / n * 1e6:.0f} us/msg;"
        f" baseline smtplib {base['cpu'] / n * 1e6:.0f} us/msg"
    )
    ok = pipe["count"] == n and base["count"] == n
    if not ok:
        print(
            f"  WARNING: pipeline sent {pipe['count']}, baseline {base['count']} of {n};"
            f" errors {base['errors']}"
        )
    rows = []
    if target == "smtp-sink":
        rows.append(
            (
                f"(b)/(a) >= 0.8 at {fmt(n)} against smtp-sink",
                ratio >= TARGETS["pipeline_ratio"] and ok,
                f"{ratio:.2f} ({fmt(b)} vs {fmt(a)} msg/s)",
            )
        )
        rows.append(
            (
                "CPU outside SMTP I/O <= 50 us/recipient",
                extra_cpu_us <= TARGETS["cpu_us"],
                f"{extra_cpu_us:.0f} us (main thread {main_us:.0f} us)",
            )
        )
    else:
        rows.append(
            (
                f"(b)/(a) against {target} (no target; informative)",
                True,
                f"{ratio:.2f} ({fmt(b)} vs {fmt(a)} msg/s)",
            )
        )
    return rows


def sink_vs_maildev(args: argparse.Namespace, work: Path, message: Path) -> tuple[str, bool, str]:
    n = args.receive_count
    rates = {}
    for name in ("sink", "maildev"):
        with server(name, work, max_messages=n + 10) as srv:
            res = run_child("baseline", port=srv.port, count=n, connections=args.connections, message=message)
            client_done = time.perf_counter()
            deadline = client_done + 120
            while files_in(srv.store_dir) < n and time.perf_counter() < deadline:
                time.sleep(0.05)
            on_disk = files_in(srv.store_dir)
            lag = time.perf_counter() - client_done
        rates[name] = res["count"] / res["wall"]
        print(
            f"  {name:8} received {fmt(res['count'])} in {res['wall']:.2f} s = {fmt(rates[name])} msg/s;"
            f" {fmt(on_disk)} files on disk {lag:.1f} s after the client finished"
        )
    ratio = rates["sink"] / rates["maildev"]
    return (
        "our sink >= 1.25 x MailDev (same smtplib client, same run)",
        ratio >= TARGETS["sink_vs_maildev"],
        f"{ratio:.2f} ({fmt(rates['sink'])} vs {fmt(rates['maildev'])} msg/s)",
    )


def render_row(times: list[float], variants: int) -> tuple[str, bool, str]:
    cold, warm = times[0], times[1:]
    mean, worst = statistics.mean(warm), max(warm)
    print(
        "\n== render + inline (DigestRenderer.render: Jinja2 + premailer),"
        f" {variants} variants x 5 rounds ==\n"
        f"  first render in the process (templates compiled) {cold:.1f} ms; then per variant:"
        f" mean {mean:.1f} ms,"
        f" median {statistics.median(warm):.1f} ms, p90 {sorted(warm)[int(len(warm) * 0.9)]:.1f} ms,"
        f" max {worst:.1f} ms"
    )
    return (
        "render + inline <= 20 ms per variant",
        mean <= TARGETS["render_ms"],
        f"mean {mean:.1f} ms, max {worst:.1f} ms (first in process {cold:.1f} ms)",
    )


def scale_check(args: argparse.Namespace, work: Path) -> tuple[str, bool, str]:
    results = {}
    for n in (100_000, 1_000_000):
        db = work / f"scale-{n}.sqlite"
        setup = make_subscriber_db(db, n)
        run_dir = work / f"scale-run-{n}"
        run_dir.mkdir()
        print(f"  {fmt(n)} subscribers inserted in {setup:.0f} s; sending to smtp-sink ...", flush=True)
        with server("smtp-sink", work, max_messages=n) as srv:
            res = run_child(
                "pipeline",
                port=srv.port,
                connections=args.connections,
                db=db,
                work=run_dir,
                max_seconds=args.max_seconds if n == 1_000_000 else 0,
            )
        db.unlink()
        results[n] = res
        note = "  PARTIAL: stopped by --max-seconds" if res.get("partial") else ""
        print(
            f"  {fmt(n):>9}: peak RSS {res['rss_mb']:.0f} MB"
            f" (after imports {res['rss_before_mb']:.0f} MB, at the end of planning"
            f" {res['rss_at_planned_mb']:.0f} MB);"
            f" planning {res['plan_wall']:.0f} s; {fmt(res['count'])} results in {res['wall']:.0f} s;"
            f" rows {res['counts']}{note}",
            flush=True,
        )
    big, small = results[1_000_000], results[100_000]
    ratio = big["rss_mb"] / small["rss_mb"]
    partial = (
        f"; 1,000,000 run stopped after {big['wall']:.0f} s with {fmt(big['count'])} sent (peak so far)"
        if big.get("partial")
        else ""
    )
    return (
        "peak RSS 1,000,000 / 100,000 <= 1.3",
        ratio <= TARGETS["rss_ratio"],
        f"{ratio:.2f} ({big['rss_mb']:.0f} MB vs {small['rss_mb']:.0f} MB){partial}",
    )


def rate_check(args: argparse.Namespace, work: Path) -> tuple[str, bool, str]:
    limit, seconds = 200.0, 30.0
    n = int(limit * seconds)
    db = work / "rate.sqlite"
    make_subscriber_db(db, n)
    run_dir = work / "rate-run"
    run_dir.mkdir()
    with server("sink", work, max_messages=n + 10) as srv:
        res = run_child(
            "pipeline", port=srv.port, connections=args.connections, db=db, work=run_dir, rate_limit=limit
        )
        srv.stop()
        index = srv.store_dir.parent / "sink-index.jsonl" if srv.store_dir else None
        server_times = (
            sorted(json.loads(line)["at"] for line in index.read_text().splitlines() if '"at"' in line)
            if index and index.exists()
            else []
        )
    client = res["sent_at"]
    measured = {}
    for name, stamps in (
        ("server (sink receive times)", server_times),
        ("client (results collected)", client),
    ):
        if len(stamps) > 1:
            span = stamps[-1] - stamps[0]
            measured[name] = (len(stamps) - 1) / span
            worst = max(
                sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps[:: max(1, len(stamps) // 300)]
            )
            print(
                f"  {name}: {len(stamps)} messages over {span:.1f} s = {measured[name]:.1f} msg/s;"
                f" busiest 1-second window {worst}"
            )
    rate = measured.get("server (sink receive times)") or measured.get("client (results collected)", 0.0)
    off = abs(rate - limit) / limit
    return (
        f"smtp.rate_limit=200 holds within 5% over {seconds:.0f} s",
        off <= TARGETS["rate_tolerance"],
        f"{rate:.1f} msg/s ({off:.1%} off)",
    )


def dkim_env(kind: str) -> dict[str, str]:
    """Settings that sign with a fresh key of ``kind`` (no DNS check: nothing is published here)."""
    if not kind:
        return {}
    from newsletter.delivery.dkim_keys import generate_key, private_pem

    return {
        "NEWSLETTER_MAIL_DKIM_SELECTOR": f"bench-{kind}",
        "NEWSLETTER_DKIM_PRIVATE_KEY": private_pem(generate_key(kind)).decode("ascii"),
        "NEWSLETTER_MAIL_DKIM_CHECK_DNS": "false",
    }


def dkim_check(args: argparse.Namespace, work: Path) -> tuple[str, bool, str]:
    """The same edition against smtp-sink unsigned, with ed25519 and with rsa, interleaved for
    ``--rounds`` rounds (the machine's load drifts); msg/s and CPU per recipient each, medians compared."""
    n = args.subscribers
    base_db = work / "dkim-base.sqlite"
    make_subscriber_db(base_db, n)
    rates: dict[str, list[float]] = {"": [], "ed25519": [], "rsa": []}
    cpus: dict[str, list[float]] = {kind: [] for kind in rates}
    for round_no in range(1, args.rounds + 1):
        for kind in rates:
            run_dir = work / f"dkim-{kind or 'off'}-{round_no}"
            run_dir.mkdir()
            copy_db(base_db, run_dir / "db.sqlite")
            with server("smtp-sink", work, max_messages=n + 10) as srv:
                res = run_child(
                    "pipeline",
                    port=srv.port,
                    connections=args.connections,
                    db=run_dir / "db.sqlite",
                    work=run_dir,
                    dkim=kind,
                )
            send_wall = res["wall"] - res["plan_wall"]
            rates[kind].append(res["count"] / res["wall"])
            cpus[kind].append(res["cpu"] / n * 1e6)
            sending = res["count"] / send_wall if send_wall > 0 else 0.0
            print(
                f"  round {round_no} {kind or 'unsigned':9} {fmt(rates[kind][-1]):>7} msg/s end to end"
                f" ({fmt(sending)} msg/s sending);"
                f" CPU {cpus[kind][-1]:.0f} us/recipient,"
                f" main thread {res['main_thread_cpu'] / n * 1e6:.0f} us/recipient;"
                f" rows {res['counts']}",
                flush=True,
            )
            (run_dir / "db.sqlite").unlink()
    rate = {kind: statistics.median(values) for kind, values in rates.items()}
    cpu = {kind: statistics.median(values) for kind, values in cpus.items()}
    ed, rsa = rate["ed25519"] / rate[""], rate["rsa"] / rate[""]
    print(
        f"  medians: unsigned {fmt(rate[''])} msg/s ({cpu['']:.0f} us CPU/recipient),"
        f" ed25519 {fmt(rate['ed25519'])} msg/s ({cpu['ed25519']:.0f} us),"
        f" rsa {fmt(rate['rsa'])} msg/s ({cpu['rsa']:.0f} us)"
    )
    print(
        f"  ed25519 / unsigned = {ed:.2f}; rsa / unsigned = {rsa:.2f}; signing CPU per recipient:"
        f" ed25519 +{cpu['ed25519'] - cpu['']:.0f} us, rsa +{cpu['rsa'] - cpu['']:.0f} us"
    )
    return (
        f"ed25519 signing keeps >= 0.8 of the unsigned rate at {fmt(n)}",
        ed >= TARGETS["dkim_ed25519_ratio"],
        f"{ed:.2f} (rsa {rsa:.2f})",
    )


def profile_run(args: argparse.Namespace, work: Path) -> None:
    n = args.subscribers
    db = work / "profile.sqlite"
    make_subscriber_db(db, n)
    with server("smtp-sink", work, max_messages=n) as srv:
        res = run_child(
            "pipeline", port=srv.port, connections=args.connections, db=db, work=work, profile=True
        )
    print(
        "cProfile of the main thread (planning, rendering, outbox, claims, splicing, commits);"
        f" {fmt(n)} recipients, wall {res['wall']:.1f} s under the profiler"
    )
    print(res["profile_tottime"])
    print(res["profile_cumulative"])


def print_summary(rows: list[tuple[str, bool, str]]) -> None:
    print("\n== targets ==")
    for name, ok, figure in rows:
        print(f"  {verdict(ok):8} {name}: {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--subscribers", type=int, default=100_000, help="recipients in the edition (default 100000)"
    )
    parser.add_argument(
        "--connections", type=int, default=4, help="SMTP connections, smtp.connections (default 4)"
    )
    parser.add_argument(
        "--target",
        choices=["smtp-sink", "sink", "maildev", "all"],
        default="all",
        help="SMTP server(s) for (a) and (b)",
    )
    parser.add_argument(
        "--receive-count",
        type=int,
        default=20_000,
        help="messages for the sink-vs-MailDev receive test (default 20000)",
    )
    parser.add_argument("--no-receive", action="store_true", help="skip the sink-vs-MailDev receive test")
    parser.add_argument(
        "--scale-check", action="store_true", help="only: peak RSS at 1,000,000 vs 100,000 subscribers"
    )
    parser.add_argument("--rate-check", action="store_true", help="only: smtp.rate_limit=200 over 30 s")
    parser.add_argument("--profile", action="store_true", help="only: cProfile the pipeline's main thread")
    parser.add_argument(
        "--dkim-check",
        action="store_true",
        help="only: the pipeline with DKIM signing off, ed25519 and rsa (smtp-sink)",
    )
    parser.add_argument("--dkim", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--dkim-check: interleaved rounds of off/ed25519/rsa, medians compared (default 3)",
    )
    parser.add_argument(
        "--work-dir", default=None, help="keep the temporary files here (default: a temp dir, removed)"
    )
    # Internal: one measurement in a child process.
    parser.add_argument("--child", choices=["baseline", "pipeline", "sink"], help=argparse.SUPPRESS)
    for name in ("port", "count", "max-messages"):
        parser.add_argument(f"--{name}", type=int, default=0, help=argparse.SUPPRESS)
    for name in ("message", "db", "work", "maildir"):
        parser.add_argument(f"--{name}", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rate-limit", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="--scale-check: stop the 1,000,000 run after this long and report the peak RSS so far"
        " (default: no limit)",
    )
    args = parser.parse_args()

    if args.child == "sink":
        child_sink(args)
        return
    if args.child:
        result = child_baseline(args) if args.child == "baseline" else child_pipeline(args)
        print(json.dumps(result))
        return

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="newsletter-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"newsletter send benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, work dir {work}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    rows: list[tuple[str, bool, str]] = []
    try:
        if args.profile:
            profile_run(args, work)
            return
        if args.scale_check:
            print("\n== scale check: the same pipeline at 100,000 and 1,000,000 subscribers (smtp-sink) ==")
            rows.append(scale_check(args, work))
        elif args.dkim_check:
            print(
                "\n== DKIM: the pipeline with signing off, ed25519-sha256 and rsa-sha256 (2048),"
                f" {fmt(args.subscribers)} recipients, smtp-sink =="
            )
            rows.append(dkim_check(args, work))
        elif args.rate_check:
            print("\n== rate check: smtp.rate_limit=200, 6,000 recipients (30 s), our sink ==")
            rows.append(rate_check(args, work))
        else:
            data, variants, times = sample_message()
            message = work / "digest.eml"
            message.write_bytes(data)
            print(f"digest size {fmt(len(data))} bytes (a real rendered digest, all topics)")
            rows.append(render_row(times, variants))
            base_db = work / "subscribers.sqlite"
            setup = make_subscriber_db(base_db, args.subscribers)
            print(f"{fmt(args.subscribers)} subscribers bulk-inserted in {setup:.1f} s (not measured)")
            targets = ["smtp-sink", "sink", "maildev"] if args.target == "all" else [args.target]
            for target in targets:
                res = measure_target(target, args, work, base_db, message)
                res["connections"] = args.connections
                rows += report_target(target, res, args.subscribers)
            if not args.no_receive:
                print(
                    f"\n== receive rate: our sink vs MailDev, {fmt(args.receive_count)} messages,"
                    f" the same smtplib client ({args.connections} connections) =="
                )
                rows.append(sink_vs_maildev(args, work, message))
        print(
            "\nMethod: each measurement runs in a fresh child process;"
            " CPU = getrusage(RUSAGE_SELF) user+system over the"
            "\nmeasured section; peak RSS = ru_maxrss of that child; SMTP servers run in their own processes."
        )
        print_summary(rows)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
