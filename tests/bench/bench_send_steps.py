"""The send's main-thread steps, each measured alone (run by hand, not in CI).

    .venv/bin/python tests/bench/bench_send_steps.py                  # 20,000 subscribers
    .venv/bin/python tests/bench/bench_send_steps.py --subscribers 100000

On a fresh SQLite database with N subscribers (as ``bench_send.py`` makes it), an edition is
planned (``EditionRunner.run(send=False)``), then every row goes through what the sender's main
thread does with it, one step at a time and without SMTP: claiming in batches of
``delivery.batch_size`` (``OutboxStore.claim_deliveries``), building the message with its three
signed tokens (``Sender._job``), and committing a batch of "sent" results (``Sender._commit``).
Each step's CPU (``time.thread_time``) is printed per row, beside the plain SQLite work of the
same claim and commit (raw ``sqlite3``, hand-written SQL, on a copy of the same planned
database) measured in the same run: the ratio is what the store and SQLAlchemy add.

In the send benchmark the main thread costs more than these steps added up: there it shares
2 cores with the SMTP connection threads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_send  # the same database and settings as the send benchmark


def plain_claim_and_commit(db: Path, edition_id: int, batch: int) -> tuple[float, float, int]:
    """CPU seconds of claiming and committing every row with hand-written SQL; rows done."""
    conn = sqlite3.connect(db, isolation_level=None)
    claim_cpu = commit_cpu = 0.0
    done = 0
    while True:
        started = time.thread_time()
        conn.execute("BEGIN")
        rows = conn.execute(
            "SELECT d.id, d.subscriber_id, d.variant_id, d.email, d.name, d.message_id, d.attempts,"
            " s.status, s.paused"
            " FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
            " WHERE d.edition_id = ? AND d.state = 'pending' ORDER BY d.state, d.id LIMIT ?",
            (edition_id, batch),
        ).fetchall()
        ids = [r[0] for r in rows]
        marks = ",".join("?" * len(ids))
        if ids:
            conn.execute(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1,"
                " updated_at = '2026-01-01 00:00:00', claimed_by = 'h:1',"
                f" lease_until = '2026-01-01 00:05:00', claim_token = 't' WHERE id IN ({marks})",
                ids,
            )
        conn.execute("COMMIT")
        claim_cpu += time.thread_time() - started
        if not ids:
            break
        started = time.thread_time()
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE deliveries SET state = 'sent', updated_at = '2026-01-01 00:00:01',"
            " sent_at = '2026-01-01 00:00:01', last_code = 250,"
            " last_reply = '', next_attempt_at = NULL, claim_token = NULL"
            f" WHERE id IN ({marks}) AND state = 'sending' AND claim_token = 't' RETURNING id",
            ids,
        ).fetchall()
        conn.execute(
            "UPDATE subscribers"
            " SET ledger_seq = max(coalesce(subscribers.ledger_seq, d.ledger_seq), d.ledger_seq),"
            f" last_digest_at = '2026-01-01 00:00:00' FROM deliveries d WHERE d.id IN ({marks})"
            " AND d.subscriber_id = subscribers.id",
            ids,
        )
        conn.execute("COMMIT")
        commit_cpu += time.thread_time() - started
        done += len(ids)
    conn.close()
    return claim_cpu, commit_cpu, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="newsletter-steps-"))
    try:
        db = work / "steps.sqlite"
        bench_send.make_subscriber_db(db, args.subscribers)
        os.chdir(work)  # no ./newsletter.toml from the caller's directory

        from newsletter.config import load_settings
        from newsletter.delivery.message import PreparedMessage
        from newsletter.delivery.sender import Sender
        from newsletter.models import DeliveryOutcome, DeliveryState
        from newsletter.service import Service

        settings = load_settings(env=bench_send.settings_env(db, 2525, work, connections=4))
        service = Service(settings)
        started = time.thread_time()
        edition = service.runner.run(key="steps", send=False).edition
        plan_cpu = time.thread_time() - started
        bench_send.copy_db(db, work / "plain.sqlite")
        prepared = {
            v.id: PreparedMessage(
                from_name=settings.mail.from_name,
                from_address=settings.mail.from_address,
                subject=v.subject,
                text=v.text,
                html=v.html,
                list_id=settings.mail.list_id,
                extra_headers=(("X-Newsletter-Edition", edition.key),),
            )
            for v in service.store.editions.list_variants(edition.id)
        }
        sender = Sender(
            settings,
            service.store.outbox,
            service.store.subscribers,
            service.signer,
            service.runner.suppressor(),
            edition_id=edition.id,
            as_of=edition.as_of,
            prepared=prepared,
        )
        batch = settings.delivery.batch_size
        claim_cpu = build_cpu = commit_cpu = 0.0
        rows_done = 0
        date = format_datetime(sender.clock())
        while True:
            started = time.thread_time()
            rows = service.store.outbox.claim_deliveries(
                edition.id, limit=batch, worker=sender.worker, lease_seconds=300, token=sender.token
            )
            claim_cpu += time.thread_time() - started
            if not rows:
                break
            started = time.thread_time()
            for row in rows:
                sender._job(row, date)  # built and dropped, as a connection thread drops it once sent
            build_cpu += time.thread_time() - started
            outcomes = [DeliveryOutcome(r.id, r.subscriber_id, DeliveryState.SENT, 250, "ok") for r in rows]
            started = time.thread_time()
            sender._commit(outcomes)
            commit_cpu += time.thread_time() - started
            rows_done += len(rows)
        service.close()
        plain_claim, plain_commit, plain_rows = plain_claim_and_commit(
            work / "plain.sqlite", edition.id, batch
        )

        def per_row(seconds: float, n: int) -> float:
            return seconds / n * 1e6 if n else 0.0

        print(
            f"send steps alone: python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version},"
            f" {rows_done:,} rows, batches of {batch}"
        )
        print(f"  planning       {per_row(plan_cpu, rows_done):6.1f} us/row")
        print(
            f"  claim          {per_row(claim_cpu, rows_done):6.1f} us/row   plain SQL"
            f" {per_row(plain_claim, plain_rows):5.1f} us/row"
            f"  ({claim_cpu / plain_claim if plain_claim else 0:.2f}x)"
        )
        print(f"  build + tokens {per_row(build_cpu, rows_done):6.1f} us/row")
        print(
            f"  commit         {per_row(commit_cpu, rows_done):6.1f} us/row   plain SQL"
            f" {per_row(plain_commit, plain_rows):5.1f} us/row"
            f"  ({commit_cpu / plain_commit if plain_commit else 0:.2f}x)"
        )
        print(
            "  main-thread steps added up:"
            f" {per_row(plan_cpu + claim_cpu + build_cpu + commit_cpu, rows_done):.1f} us/row"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
