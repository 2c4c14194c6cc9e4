"""Web benchmark: GET / latency while signups meet a slow mail relay (run by hand, not in CI).

    .venv/bin/python tests/bench/bench_web.py                 # 45 signups, relay delay 8 s
    .venv/bin/python tests/bench/bench_web.py --signups 90 --delay 8 --before 1ad8d6b

One run measures, against the same sink (``SinkServer`` with the fault ``rcpt:delay=D``,
so every confirmation mail holds its SMTP session D seconds):

(a) baseline: this tree's app, GET / with no signups in flight;
(b) after: this tree's app, GET / right after N concurrent signups (the mails are queued
    and drained by the worker thread: no request waits for the relay);
(c) before: the app of revision ``--before`` (exported with ``git archive``; the default is
    the last revision that mailed inside the request's thread pool), same load.

Each app runs in its own process under plain ``uvicorn.run`` on a fresh SQLite database;
every signup comes from its own client address, as in the audit. Latencies are
wall-clock seconds of sequential GET / requests taken while the mails are still held by
the relay. Printed: the first (right after the burst), median and worst of each, and the
worst of (b) and (c) over the worst of (a).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.servers import free_port  # noqa: E402  (needs the project on sys.path)

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
CHILD = """
import sys, uvicorn
from newsletter.config import load_settings
from newsletter.service import Service
from newsletter.web.app import create_app
settings = load_settings(sys.argv[1])
service = Service(settings)
service.runner.ingest()
uvicorn.run(create_app(service), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def serve(tree: Path, work: Path, smtp_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """The app of ``tree`` in a child process; its base URL once it answers."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "empty.toml"
    config.write_text("", encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        PYTHONPATH=str(tree),
        NEWSLETTER_DATABASE_URL=f"sqlite:///{work}/db.sqlite",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        NEWSLETTER_SMTP_TIMEOUT="60",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_SITE_BASE_URL=f"http://127.0.0.1:{port}",
    )
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(config), str(port)], env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                return child, base
        except httpx.HTTPError:
            time.sleep(0.1)
    child.kill()
    raise SystemExit(f"the app from {tree} did not start")


def latencies(base: str, count: int) -> list[float]:
    taken = []
    for _ in range(count):
        start = time.perf_counter()
        httpx.get(base + "/", timeout=120).raise_for_status()
        taken.append(time.perf_counter() - start)
    return taken


def signup(base: str, i: int) -> int:
    # Each signup from its own client (X-Forwarded-For, believed from loopback by the child's
    # plain uvicorn.run), so the per-client limit does not cap the load, as in the audit.
    headers = {"X-Forwarded-For": f"198.18.{i // 250}.{i % 250 + 1}"}
    return httpx.post(
        base + "/subscribe", data={"email": f"reader{i}@example.org"}, headers=headers, timeout=120
    ).status_code


def measure(
    tree: Path, work: Path, smtp_port: int, signups: int, samples: int
) -> tuple[list[float], list[float]]:
    """(GET / latencies with no signups, GET / latencies just after ``signups`` concurrent signups)."""
    child, base = serve(tree, work, smtp_port)
    try:
        idle = latencies(base, samples)
        with ThreadPoolExecutor(max_workers=signups) as pool:
            codes = list(pool.map(lambda i: signup(base, i), range(signups)))
        assert set(codes) == {200}, codes
        loaded = latencies(base, samples)
        return idle, loaded
    finally:
        child.terminate()
        child.wait(timeout=30)


def line(label: str, values: list[float]) -> str:
    return (
        f"{label:<46} first {values[0] * 1000:8.1f} ms   median {statistics.median(values) * 1000:7.1f} ms"
        f"   max {max(values) * 1000:8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=45)
    parser.add_argument("--delay", type=float, default=8.0, help="seconds the relay holds each mail")
    parser.add_argument("--samples", type=int, default=10, help="GET / requests per measurement")
    parser.add_argument("--before", default="1ad8d6b", help="the revision to compare with (git archive)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from newsletter.sink.faults import parse_fault_spec
    from newsletter.sink.server import SinkServer

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        tmp_path = Path(tmp)
        sink = SinkServer(maildir=tmp_path / "maildir", host="127.0.0.1", smtp_port=0)
        sink.start()
        try:
            sink.faults.add(parse_fault_spec(f"rcpt:delay={args.delay:g}"))
            old_tree = tmp_path / "before"
            old_tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.before], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
            idle, after = measure(ROOT, tmp_path / "after", sink.port, args.signups, args.samples)
            _, before = measure(old_tree, tmp_path / "before-run", sink.port, args.signups, args.samples)
        finally:
            sink.stop()
    print(
        f"{args.signups} concurrent signups, relay delay {args.delay:g} s per mail, {args.samples} GET / each"
    )
    print(line("(a) baseline: no signups", idle))
    print(line("(b) after: mail queue, just after the signups", after))
    print(line(f"(c) before ({args.before}): mail in the request pool", before))
    # The first GET after the burst is the one that meets a full thread pool (if the mail is in it).
    print(
        f"ratio of the worst GET: (b)/(a) {max(after) / max(idle):.1f}"
        f"   (c)/(a) {max(before) / max(idle):.1f}"
    )


if __name__ == "__main__":
    main()
