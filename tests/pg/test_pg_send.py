"""Sending on PostgreSQL: an edition through the in-process sink, three `newsletter worker --once`
processes draining one edition of 5,000 recipients together, and a dead worker's rows coming back."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from newsletter.models import DeliveryState, EditionStatus
from newsletter.storage.schema import deliveries
from tests.factories import bulk_subscribers, utc
from tests.invariants import check_delivery

from .helpers import NEWSLETTER, claimed_by_counts, plan_only, subprocess_env

AS_OF = utc(2018, 8, 22)


def received(sink) -> Counter[tuple[str, str]]:
    """(recipient, Message-ID) -> copies the sink holds."""
    sink.flush()
    return Counter((rcpt.lower(), m.headers["Message-ID"]) for m in sink.messages() for rcpt in m.rcpt_tos)


def assert_each_row_sent_once(service, edition_key: str, sink) -> None:
    """The delivery invariants, every row sent exactly once, and nothing else in the sink."""
    sink.flush()
    messages = sink.messages()
    checked = check_delivery(service.store, service.signer, messages, edition_key)
    assert checked.states() == {DeliveryState.SENT.value: len(checked.rows)}
    assert len(messages) == len(checked.rows), f"{len(messages)} messages for {len(checked.rows)} rows"


def test_an_edition_sent_through_the_sink_on_postgresql(pg_service, pg_sink):
    service = pg_service()
    bulk_subscribers(service.store, 40)
    result = service.runner.run(key="pg-first", as_of=AS_OF)
    assert result.created and result.edition.status is EditionStatus.SENT, result.message
    assert result.tally == {"sent": 40}
    assert_each_row_sent_once(service, result.edition.key, pg_sink)
    message = pg_sink.messages()[0]
    assert (
        message.headers["List-Unsubscribe"].startswith("<https://")
        and message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )
    assert message.headers["X-Newsletter-Edition"] == "pg-first"
    # The same key again: nothing is sent twice.
    again = service.runner.run(key="pg-first", as_of=AS_OF)
    assert not again.created and "already ended" in again.message
    assert sum(received(pg_sink).values()) == 40
    # Each sent row moved its subscriber's mark: the next edition has nothing new for anyone.
    later = service.runner.run(key="pg-second", as_of=AS_OF + timedelta(hours=1), fetch=False)
    assert later.edition.status is EditionStatus.SKIPPED


def test_three_workers_drain_one_edition_of_5000_together(pg_service, pg_env, pg_sink, tmp_path):
    service = pg_service()
    bulk_subscribers(service.store, 5000)
    edition = plan_only(service, "pg-workers", as_of=AS_OF)
    assert edition.counts == {"pending": 5000}
    # Small claims so the three interleave; the sink sees at most 3 x 2 connections.
    env = {**pg_env, "NEWSLETTER_DELIVERY_BATCH_SIZE": "100", "NEWSLETTER_SMTP_CONNECTIONS": "2"}
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [*NEWSLETTER, "worker", "--once"],
            env=subprocess_env(env),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        outputs.append((worker.returncode, out, err))
    assert all(code == 0 for code, _, _ in outputs), outputs
    elapsed = time.monotonic() - started

    assert_each_row_sent_once(service, edition.key, pg_sink)
    by = claimed_by_counts(service, edition.id)
    pids = {str(w.pid) for w in workers}
    assert {name.rpartition(":")[2] for name in by} == pids, f"claimed_by {dict(by)} after {elapsed:.1f}s"
    assert min(by.values()) >= 100, f"work was not shared: {dict(by)}"
    assert sum(by.values()) == 5000
    # The last worker to finish closes the edition.
    assert service.store.editions.get_edition(edition.id).status is EditionStatus.SENT, dict(by)


def test_a_dead_workers_rows_come_back_to_another_worker(pg_service, pg_env, pg_sink, tmp_path):
    service = pg_service()
    store = service.store
    bulk_subscribers(service.store, 300)
    edition = plan_only(service, "pg-dead", as_of=AS_OF)
    # A live worker elsewhere holds 30 rows under a lease that has not run out: not to be touched.
    live = store.outbox.claim_deliveries(edition.id, limit=30, worker="busy-host:777", lease_seconds=3600)
    # A worker on another machine claimed 120 rows ten minutes ago with a 5-minute lease, then died.
    past = datetime.now(UTC) - timedelta(minutes=10)
    dead = store.outbox.claim_deliveries(
        edition.id, limit=120, worker="elsewhere:4242", lease_seconds=300, now=past
    )
    assert {d.id for d in dead}.isdisjoint({d.id for d in live})
    assert len(dead) == 120 and len(live) == 30

    run = subprocess.run(
        [*NEWSLETTER, "worker", "--once"],
        env=subprocess_env(pg_env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr

    counts = store.editions.delivery_counts(edition.id)
    assert counts == {"sent": 270, "sending": 30}, counts
    with store.engine.connect() as conn:
        rows = {
            r.id: r for r in conn.execute(sa.select(deliveries).where(deliveries.c.edition_id == edition.id))
        }
    for d in dead:
        row = rows[d.id]
        assert row.state == "sent" and row.claimed_by != "elsewhere:4242" and row.attempts == 2
    assert {rows[d.id].claimed_by for d in live} == {"busy-host:777"}
    got = received(pg_sink)
    assert sum(got.values()) == 270 and set(got.values()) == {1}
    assert all(
        rows[d.id].message_id in {mid for _, mid in got} for d in dead
    )  # sent with the row's own Message-ID
    assert (
        store.editions.get_edition(edition.id).status is EditionStatus.SENDING
    )  # not finished while the live lease holds rows
