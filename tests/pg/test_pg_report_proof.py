"""On PostgreSQL: planning draws each row's Message-ID from the server's strong generator (128
random bits, no structure), and two processes recording the same judgement agree on one."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from newsletter.storage.schema import deliveries
from tests.factories import bulk_subscribers, utc

from .helpers import plan_only


def test_planned_message_ids_are_random_per_row_on_postgresql(pg_service):
    service = pg_service()
    bulk_subscribers(service.store, 300)
    edition = plan_only(service, "pg-ids", as_of=utc(2018, 8, 22))
    with service.store.engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(deliveries.c.message_id).where(deliveries.c.edition_id == edition.id)
            ).scalars()
        )
    assert len(ids) == 300 and len(set(ids)) == 300
    assert all(re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{32}@example\.com>", m) for m in ids), ids[:3]
    # No shared part: every hex position takes many values across the rows.
    randoms = [m.split(".")[1][:32] for m in ids]
    assert all(len({r[i] for r in randoms}) > 8 for i in range(32))


def test_one_judgement_however_many_processes_record_it_on_postgresql(pg_service):
    services = [pg_service() for _ in range(4)]
    stores = [s.store for s in services]  # each opens its own engine before the race
    now = datetime.now(UTC)
    results: list[bool] = []
    barrier = threading.Barrier(len(services))

    def record(store) -> None:
        barrier.wait()
        results.append(store.bounces.mark_judged(["row:7:failure", "ses:m1:a@example.org"], now=now))

    threads = [threading.Thread(target=record, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    bounces = stores[0].bounces
    assert bounces.already_judged(["ses:m1:a@example.org"], now=now)
    assert bounces.mark_judged(["mailgun:token:x"], expires_at=now - timedelta(seconds=1), now=now)
    assert not bounces.already_judged(["mailgun:token:x"], now=now), "an expired id is forgotten"
