"""The store on PostgreSQL: subscribers, reports upsert, the editions' unique key, and the outbox
(claims under FOR UPDATE SKIP LOCKED, leases, batch results)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from newsletter.models import Cadence, DeliveryOutcome, DeliveryState, EditionStatus, Report, SubscriberStatus
from newsletter.storage.schema import deliveries, editions, subscribers
from tests.factories import bulk_subscribers, utc


def report(n: int, *, title: str | None = None, topics: tuple[str, ...] = ("China",)) -> Report:
    return Report(
        id=f"guid-{n}",
        title=title or f"Report {n}",
        url=f"https://example.com/reports/{n}",
        published=utc(2018, 8, 1) + timedelta(hours=n),
        teaser=f"Teaser {n} – ünïcode",
        topics=topics,
    )


def test_the_store_is_really_on_postgresql(pg_service):
    store = pg_service().store
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.dialect.driver == "psycopg"
    names = set(sa.inspect(store.engine).get_table_names())
    assert {
        "subscribers",
        "reports",
        "editions",
        "variants",
        "deliveries",
        "bounce_events",
        "alembic_version",
    } <= names


def test_subscribers_add_find_status_and_aware_times(pg_service):
    store = pg_service().store
    alice, created = store.subscribers.add_subscriber(
        email="alice@example.org", name="Alice Ünal", topics=["China", "Business"], now=utc(2024, 3, 1, 12)
    )
    assert created and alice.id
    again, created_again = store.subscribers.add_subscriber(email="alice@example.org", name="Someone else")
    assert not created_again and again.id == alice.id and again.name == "Alice Ünal"
    found = store.subscribers.find_subscriber("alice@example.org")
    assert found is not None and found.topics == ("China", "Business")
    assert found.created_at == utc(2024, 3, 1, 12) and found.created_at.tzinfo is not None
    assert store.subscribers.set_status(alice.id, SubscriberStatus.UNSUBSCRIBED, reason="one-click") is True
    assert store.subscribers.set_status(alice.id, SubscriberStatus.UNSUBSCRIBED) is False  # idempotent
    assert store.subscribers.get_subscriber(alice.id).status is SubscriberStatus.UNSUBSCRIBED
    # Raw on purpose: add_subscriber never inserts a duplicate, so only a direct INSERT can
    # show that the database itself refuses one.
    with store.engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(
            subscribers.insert().values(
                email="alice@example.org",
                name="",
                status="active",
                topics=[],
                cadence="daily",
                paused=False,
                created_at=utc(2024, 1, 1),
                updated_at=utc(2024, 1, 1),
                status_reason="",
            )
        )
    assert store.subscribers.remove_subscriber("alice@example.org") is True
    assert store.subscribers.find_subscriber("alice@example.org") is None


def test_recipients_are_streamed_by_id_across_batches(pg_service):
    service = pg_service()
    store = service.store
    bulk_subscribers(service.store, 23)
    everyone = list(store.subscribers.list_subscribers())
    assert len(everyone) == 23
    store.subscribers.set_status(everyone[3].id, SubscriberStatus.BOUNCED)
    store.subscribers.update_preferences(everyone[10].id, topics=[], cadence=Cadence.DAILY, paused=True)
    store.subscribers.update_preferences(everyone[11].id, topics=[], cadence=Cadence.WEEKLY, paused=False)
    streamed = [s.id for s in store.subscribers.iter_recipients(batch_size=5)]
    expected = [s.id for s in everyone if s.id not in (everyone[3].id, everyone[10].id)]
    assert streamed == expected  # ordered, nobody twice, across five pages
    daily = [s.id for s in store.subscribers.iter_recipients(cadences=[Cadence.DAILY], batch_size=4)]
    assert everyone[11].id not in daily and len(daily) == 20


def test_reports_upsert_adds_updates_and_keeps_unchanged(pg_service):
    store = pg_service().store
    assert store.reports.upsert_reports(
        [report(1), report(2), report(3, topics=("Business", "Government"))]
    ) == (3, 0)
    assert store.reports.upsert_reports([report(1), report(2)]) == (0, 0)
    assert store.reports.upsert_reports([report(1, title="Report 1, corrected"), report(4)]) == (1, 1)
    assert store.reports.count_reports() == 4
    newest = store.reports.recent_reports(limit=10)
    assert [r.id for r in newest] == ["guid-4", "guid-3", "guid-2", "guid-1"]
    assert newest[-1].title == "Report 1, corrected" and newest[-1].teaser.endswith("ünïcode")
    assert newest[1].topics == ("Business", "Government")
    assert newest[0].published.tzinfo is not None
    assert [r.id for r in store.reports.recent_reports(limit=10, published_before=utc(2018, 8, 1, 2))] == [
        "guid-2",
        "guid-1",
    ]
    assert store.reports.all_topics() == ["Business", "China", "Government"]


def test_edition_key_is_unique_even_when_two_processes_race(pg_service):
    store = pg_service().store
    results = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        results.append(
            store.editions.create_edition(key="daily-2024-03-01", schedule="daily", as_of=utc(2024, 3, 1, 12))
        )

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len({edition.id for edition, _ in results}) == 1
    edition = results[0][0]
    assert edition.status is EditionStatus.PLANNED and edition.as_of == utc(2024, 3, 1, 12)
    # Raw on purpose: create_edition never inserts a taken key; the unique index must refuse one.
    with store.engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(
            editions.insert().values(
                key="daily-2024-03-01",
                schedule="daily",
                status="planned",
                as_of=utc(2024, 3, 1),
                created_at=utc(2024, 3, 1),
                reason="",
            )
        )


def _edition_with_rows(service, count: int, *, key: str = "e1"):
    store = service.store
    bulk_subscribers(service.store, count)
    edition, _ = store.editions.create_edition(key=key, schedule="manual", as_of=utc(2024, 3, 1))
    variant = store.editions.add_variant(
        edition_id=edition.id, report_ids=["guid-1"], subject="s", html="<p>h</p>", text="t"
    )
    rows = [
        {
            "edition_id": edition.id,
            "subscriber_id": s.id,
            "variant_id": variant,
            "email": s.email,
            "name": s.name,
            "message_id": f"<{edition.id}.{s.id}@example.com>",
        }
        for s in store.subscribers.list_subscribers()
    ]
    store.outbox.add_deliveries(rows)
    store.editions.set_edition_status(edition.id, EditionStatus.SENDING)
    return edition


def test_outbox_rows_are_unique_per_edition_and_subscriber(pg_service):
    service = pg_service()
    edition = _edition_with_rows(service, 3)
    first = service.store.outbox.list_deliveries(edition.id)[0]
    with pytest.raises(Exception) as caught:
        service.store.outbox.add_deliveries(
            [
                {
                    "edition_id": edition.id,
                    "subscriber_id": first.subscriber_id,
                    "variant_id": first.variant_id,
                    "email": first.email,
                    "name": "",
                    "message_id": "<other@example.com>",
                }
            ]
        )
    assert "uq_delivery_edition_subscriber" in str(caught.value)


def test_concurrent_claims_never_share_a_row(pg_service):
    """Four senders claiming at once (FOR UPDATE SKIP LOCKED): every row taken exactly once."""
    service = pg_service()
    store = service.store
    edition = _edition_with_rows(service, 1200)
    taken: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def sender(name: str) -> None:
        mine = taken.setdefault(name, [])
        barrier.wait()
        while rows := store.outbox.claim_deliveries(edition.id, limit=25, worker=name, lease_seconds=300):
            mine.extend(r.id for r in rows)

    threads = [threading.Thread(target=sender, args=(f"host:{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for ids in taken.values() for i in ids]
    assert len(all_ids) == 1200 and len(set(all_ids)) == 1200
    assert all(taken[name] for name in taken), {k: len(v) for k, v in taken.items()}
    with store.engine.connect() as conn:
        by = Counter(
            dict(
                conn.execute(
                    sa.select(deliveries.c.claimed_by, sa.func.count()).group_by(deliveries.c.claimed_by)
                ).all()
            )
        )
    assert by == Counter({name: len(ids) for name, ids in taken.items()})
    assert store.editions.delivery_counts(edition.id) == {"sending": 1200}


def test_leases_expire_renew_and_results_commit_in_batches(pg_service):
    service = pg_service()
    store = service.store
    edition = _edition_with_rows(service, 10)
    now = utc(2030, 1, 1, 12)
    held = store.outbox.claim_deliveries(edition.id, limit=4, worker="a:1", lease_seconds=60, now=now)
    assert len(held) == 4 and all(d.state is DeliveryState.SENDING and d.attempts == 1 for d in held)
    # Within the lease nobody else gets them.
    others = store.outbox.claim_deliveries(
        edition.id, limit=100, worker="b:2", lease_seconds=60, now=now + timedelta(seconds=30)
    )
    assert {d.id for d in others}.isdisjoint({d.id for d in held}) and len(others) == 6
    # a renews: still held at +90 s.
    store.outbox.renew_lease(edition.id, worker="a:1", lease_seconds=120, now=now + timedelta(seconds=50))
    assert (
        store.outbox.claim_deliveries(edition.id, limit=100, worker="c:3", now=now + timedelta(seconds=90))
        == []
    )
    # a dies: after its lease, c takes its rows (a second attempt, same Message-ID).
    back = store.outbox.claim_deliveries(
        edition.id, limit=100, worker="c:3", lease_seconds=60, now=now + timedelta(seconds=200)
    )
    assert sorted(d.id for d in back) == sorted(d.id for d in held + others)  # b never renewed either
    assert {d.message_id for d in back} == {d.message_id for d in held + others}
    store.outbox.record_outcomes(
        [DeliveryOutcome(d.id, d.subscriber_id, DeliveryState.SENT, 250, "ok") for d in back[:9]]
        + [DeliveryOutcome(back[9].id, back[9].subscriber_id, DeliveryState.FAILED, 550, "no such user")],
        as_of=edition.as_of,
    )
    assert store.editions.delivery_counts(edition.id) == {"sent": 9, "failed": 1}
    sub = store.subscribers.get_subscriber(back[0].subscriber_id)
    assert sub.last_digest_at == edition.as_of
    assert store.outbox.claimable_editions() == []


def test_claim_suppresses_rows_of_subscribers_who_left(pg_service):
    service = pg_service()
    store = service.store
    edition = _edition_with_rows(service, 5)
    gone = store.outbox.list_deliveries(edition.id)[2]
    store.subscribers.set_status(gone.subscriber_id, SubscriberStatus.UNSUBSCRIBED)
    taken = store.outbox.claim_deliveries(edition.id, limit=10, worker="a:1")
    assert gone.id not in {d.id for d in taken} and len(taken) == 4
    assert store.editions.delivery_counts(edition.id) == {"sending": 4, "suppressed": 1}
