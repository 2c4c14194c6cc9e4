"""Planning on the ledger: time per recipient and peak memory, beside the plain work, in one run.

    .venv/bin/python tests/bench/bench_plan.py                 # 100,000 readers: µs per recipient
    .venv/bin/python tests/bench/bench_plan.py --scale-check   # peak RSS at 1,000,000 vs 100,000
    .venv/bin/python tests/bench/bench_plan.py --postgresql postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Each figure is measured in a fresh child process on a fresh copy of the same database (an SQLite
file, or with ``--postgresql`` a database made from a template on that server):
readers with a mix of topics and ledger marks (some behind by a few reports, some by many, some
never planned) and 200 stored reports. "Planning" is `newsletter send --plan-only`'s work:
read the ledger, choose each reader's reports, render one variant per distinct set, write the
outbox. The baseline, in the same run, is the plain work planning cannot avoid: stream the same
reader rows with SQLAlchemy Core and insert one outbox row each with executemany.
Target: at most 30 µs per recipient at 100,000; peak memory flat (within 1.5x) at 1,000,000.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TOPIC_MIX = [(), ("Cameras",), ("Access Control",), ("Cameras", "Business"), ("China",), ("Business",)]
REPORTS = 200


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_db(url: str, readers: int) -> None:
    """Reports 1..REPORTS and ``readers`` active readers with mixed topics and marks."""
    from newsletter.models import Report
    from newsletter.storage.schema import subscribers
    from newsletter.storage.store import Store

    now = datetime.now(UTC)
    store = Store(url)
    store.reports.upsert_reports(
        [
            Report(
                f"r{i}",
                f"Report {i}",
                f"https://example.com/r/{i}",
                now - timedelta(hours=REPORTS - i),
                "A teaser.",
                (TOPIC_MIX[1 + i % 5][0],),
            )
            for i in range(1, REPORTS + 1)
        ]
    )
    marks = [REPORTS - 5, REPORTS - 5, REPORTS - 12, REPORTS - 40, None, REPORTS - 2]
    with store.engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(readers):
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
                    "last_digest_at": None if marks[i % 6] is None else now,
                    "ledger_seq": marks[(i // 6) % 6],
                }
            )
            if len(batch) == 500:  # multi-row statements: SQLite's search index flushes once per statement
                conn.execute(subscribers.insert().values(batch))
                batch = []
        if batch:
            conn.execute(subscribers.insert().values(batch))
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)" if url.startswith("sqlite") else "ANALYZE")
    store.dispose()


def child_plan(url: str, work: Path) -> dict[str, Any]:
    from newsletter.config import load_settings
    from newsletter.service import Service

    config = work / "empty.toml"
    config.write_text("", encoding="utf-8")
    env = {
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SECRET_KEY": "bench-" + "k" * 40,
        "NEWSLETTER_REPORTS_SETTLE": "0",
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(work / "journal"),
    }
    service = Service(load_settings(config, env=env))
    started, cpu0 = time.perf_counter(), time.process_time()
    result = service.runner.run(key="bench", fetch=False, send=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    rows = (
        sum(result.edition.counts.values())
        if result.edition.counts
        else service.store.editions.delivery_counts(result.edition.id).get("pending", 0)
    )
    service.close()
    return {"wall": wall, "cpu": cpu, "rows": rows, "peak_mb": peak_rss_mb()}


def child_baseline(url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from newsletter.storage.schema import deliveries, editions, subscribers, variants

    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        edition_id = conn.execute(
            editions.insert().values(
                key="base", schedule="manual", status="sending", as_of=now, created_at=now, reason=""
            )
        ).inserted_primary_key[0]
        variant_id = conn.execute(
            variants.insert().values(edition_id=edition_id, report_ids=[], subject="s", html="h", text="t")
        ).inserted_primary_key[0]
    started, cpu0 = time.perf_counter(), time.process_time()
    rows = 0
    last = 0
    while True:
        with engine.connect() as conn:
            page = conn.execute(
                sa.select(
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.topics,
                    subscribers.c.ledger_seq,
                )
                .where(subscribers.c.id > last)
                .order_by(subscribers.c.id)
                .limit(2000)
            ).all()
        if not page:
            break
        last = page[-1].id
        with engine.begin() as conn:
            conn.execute(
                deliveries.insert(),
                [
                    {
                        "edition_id": edition_id,
                        "subscriber_id": r.id,
                        "variant_id": variant_id,
                        "email": r.email,
                        "name": r.name,
                        "message_id": f"<{edition_id}.{r.id}@example.com>",
                        "state": "pending",
                        "attempts": 0,
                        "updated_at": now,
                        "last_reply": "",
                        "ledger_seq": r.ledger_seq,
                        "carried": 0,
                    }
                    for r in page
                ],
            )
        rows += len(page)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    engine.dispose()
    return {"wall": wall, "cpu": cpu, "rows": rows, "peak_mb": peak_rss_mb()}


def run_child(kind: str, url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--db", url], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"the {kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Databases:
    """A source database and fresh copies of it: SQLite files, or PostgreSQL databases made
    from the source as a template on the server of ``server`` (one it may create databases on)."""

    def __init__(self, server: str = "") -> None:
        self.server = server
        self.made: list[str] = []

    def source(self) -> str:
        if not self.server:
            return f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-plan-src-')) / 'db.sqlite'}"
        return self._create("bench_plan_src")

    def copy(self, source: str, name: str) -> str:
        if not self.server:
            dst = Path(tempfile.mkdtemp(prefix=f"bench-plan-{name}-")) / "db.sqlite"
            shutil.copyfile(source.removeprefix("sqlite:///"), dst)
            return f"sqlite:///{dst}"
        return self._create(f"bench_plan_{name}", template="bench_plan_src")

    def _create(self, name: str, template: str = "") -> str:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        admin = sa.create_engine(make_url(self.server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(
                sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
            )
        admin.dispose()
        self.made.append(name)
        return make_url(self.server).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.server:
            import sqlalchemy as sa
            from sqlalchemy.engine import make_url

            admin = sa.create_engine(make_url(self.server), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in reversed(self.made):
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--scale-check", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--db")
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        default="",
        help="a PostgreSQL server (any database on it) to build the databases on, instead of SQLite files",
    )
    args = parser.parse_args()
    if args.child:
        result = (
            child_plan(args.db, Path(tempfile.mkdtemp(prefix="bench-plan-work-")))
            if args.child == "plan"
            else child_baseline(args.db)
        )
        print(json.dumps(result))
        return
    databases = Databases(args.postgresql)
    sizes = [100_000, 1_000_000] if args.scale_check else [args.readers]
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        source = databases.source()
        t0 = time.perf_counter()
        make_db(source, size)
        print(
            f"{size:,} readers: {'PostgreSQL' if args.postgresql else 'SQLite'} database built in"
            f" {time.perf_counter() - t0:.1f} s"
        )
        base = run_child("baseline", databases.copy(source, "base"))
        plan = run_child("plan", databases.copy(source, "plan"))
        databases.drop_all()
        results[size] = {"plan": plan, "base": base}
        per = plan["wall"] / max(plan["rows"], 1) * 1e6
        base_per = base["wall"] / max(base["rows"], 1) * 1e6
        print(
            f"  plain work (stream rows + executemany): {base['rows']:,} rows, {base['wall']:.2f} s,"
            f" {base_per:.1f} µs/row, peak {base['peak_mb']:.0f} MB"
        )
        print(
            f"  planning (ledger, selection, variants):  {plan['rows']:,} rows, {plan['wall']:.2f} s,"
            f" {per:.1f} µs/recipient, peak {plan['peak_mb']:.0f} MB"
        )
        verdict = (
            ("MET" if per <= 30 else "NOT MET") if size == 100_000 else "(the 30 µs target is set at 100,000)"
        )
        print(f"  ratio planning / plain work: {per / base_per:.2f}x   target <= 30 µs/recipient: {verdict}")
    if args.scale_check:
        small, large = results[100_000]["plan"]["peak_mb"], results[1_000_000]["plan"]["peak_mb"]
        print(
            f"peak RSS: {small:.0f} MB at 100,000, {large:.0f} MB at 1,000,000:"
            f" {large / small:.2f}x   target <= 1.5x: {'MET' if large / small <= 1.5 else 'NOT MET'}"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
