"""Planning writes the outbox from reader groups in SQL: it must give every reader exactly what
the per-reader selection (the one `preview` shows) gives them, whatever their topics, marks,
standing and other editions. Hypothesis searches for a mix of readers where the two differ.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.models import Cadence, Report, SubscriberStatus
from newsletter.storage.planning import GroupChoice
from newsletter.storage.schema import deliveries, subscribers
from tests.factories import PG_URL_VAR, FakeClock, ScratchDatabase, Services, pg_server_url, service_env, utc

AS_OF = utc(2018, 8, 22)
TOPICS = ("Cameras", "cameras", "Access Control", "Business")
REPORTS = 12

reader_strategy = st.fixed_dictionaries(
    {
        "topics": st.sampled_from(
            [[], ["Cameras"], ["cameras"], ["Access Control", "Business"], ["Business"]]
        ),
        # Few distinct marks and topics, so readers share groups and differ in one respect only.
        "mark": st.sampled_from([None, 0, 6, 10, REPORTS, REPORTS + 1]),
        "had_digest": st.booleans(),
        "status": st.sampled_from(
            [SubscriberStatus.ACTIVE] * 5 + [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING]
        ),
        "paused": st.sampled_from([False] * 4 + [True]),
        "cadence": st.sampled_from([Cadence.DAILY] * 3 + [Cadence.WEEKLY]),
        "owed_elsewhere": st.sampled_from([False, False, False, True]),
        "spaced_json": st.booleans(),  # the same topics stored with other JSON spacing (an older writer)
    }
)


PLAIN = {
    "topics": [],
    "mark": 6,
    "had_digest": True,
    "status": SubscriberStatus.ACTIVE,
    "paused": False,
    "cadence": Cadence.DAILY,
    "owed_elsewhere": False,
    "spaced_json": False,
}


def make_reports(topic_picks: list[int], shifts: list[int]) -> list[Report]:
    """Reports 1..REPORTS in storage order, with topics and dates that disagree with that order."""
    return [
        Report(
            f"p{n}",
            f"Report {n}",
            f"https://example.com/p/{n}",
            AS_OF - timedelta(hours=30 - shifts[n - 1]),
            "t",
            (TOPICS[topic_picks[n - 1]],),
        )
        for n in range(1, REPORTS + 1)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> ScratchDatabase | None:
    """None for SQLite; a scratch-database maker on the test PostgreSQL server (CI sets it)."""
    if request.param == "sqlite":
        return None
    server = pg_server_url()
    if not server:
        pytest.skip(f"{PG_URL_VAR} is not set: no PostgreSQL server to test against (CI sets it)")
    return ScratchDatabase(server)


@settings(
    max_examples=int(os.environ.get("PLANNING_EXAMPLES", "25")),
    deadline=None,
    database=None,
    derandomize=not os.environ.get("PLANNING_RANDOM"),
    suppress_health_check=list(HealthCheck),
)
@given(
    readers=st.lists(reader_strategy, min_size=1, max_size=16),
    topic_picks=st.lists(st.integers(0, len(TOPICS) - 1), min_size=REPORTS, max_size=REPORTS),
    shifts=st.lists(st.integers(-400, 20), min_size=REPORTS, max_size=REPORTS),
    max_reports=st.integers(1, 6),
    daily=st.booleans(),
)
@example(
    # Same topics and mark, one with a digest behind them and one without: different selections.
    readers=[
        {**PLAIN, "had_digest": True},
        {**PLAIN, "had_digest": False},
        {**PLAIN, "mark": None},
        {**PLAIN, "spaced_json": True},
    ],
    topic_picks=[0] * REPORTS,
    shifts=[0] * REPORTS,
    max_reports=10,
    daily=False,
)
def test_the_outbox_gives_each_reader_what_their_own_selection_gives(
    backend, readers, topic_picks, shifts, max_reports, daily
):
    """On SQLite and PostgreSQL (the SQL differs: JSON as text, NULL-safe equality). Long runs by hand:
    PLANNING_EXAMPLES=2000 PLANNING_RANDOM=1 .venv/bin/python -m pytest tests/delivery/test_planning_sets.py
    """
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = service_env(tmp, smtp_port=1, NEWSLETTER_DIGEST_MAX_REPORTS=str(max_reports))
        if backend is not None:
            env["NEWSLETTER_DATABASE_URL"] = backend.create()
        services = Services(tmp, env, clock=FakeClock(AS_OF))
        try:
            service = services.new()
            store = service.store
            store.reports.upsert_reports(make_reports(topic_picks, shifts), now=AS_OF - timedelta(days=2))
            ids = insert_readers(store, readers)
            other = owe_elsewhere(
                service, [i for i, r in zip(ids, readers, strict=True) if r["owed_elsewhere"]]
            )
            before = {s.id: s for s in store.subscribers.list_subscribers()}
            cadences = [Cadence.DAILY] if daily else None
            eligible = [
                s
                for s in before.values()
                if s.status is SubscriberStatus.ACTIVE
                and not s.paused
                and (cadences is None or s.cadence in cadences)
                and s.id not in other
            ]
            expected = {p.subscriber.id: p.selection for p in service.runner.plan(eligible, as_of=AS_OF)}

            result = service.runner.run(
                key="sets",
                schedule="daily" if daily else "manual",
                cadences=cadences,
                as_of=AS_OF,
                fetch=False,
                send=False,
            )

            rows = outbox(store, result.edition.id)
            variants = {v.id: tuple(v.report_ids) for v in store.editions.list_variants(result.edition.id)}
            after = {s.id: s for s in store.subscribers.list_subscribers()}
            horizon = max(r.seq for r in store.reports.ledger_reports(after=-1, upto=10**9))
            for sid, old in before.items():
                row, selection = rows.get(sid), expected.get(sid)
                if selection is not None and selection.reports:
                    assert row is not None, f"reader {sid} ({old.topics}, mark {old.ledger_seq}) has no row"
                    assert variants[row["variant_id"]] == selection.key
                    assert (row["ledger_seq"], row["carried"]) == (selection.mark, selection.carried)
                    assert re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{32}@example\.com>", row["message_id"])
                    assert row["email"] == old.email and row["name"] == old.name and row["state"] == "pending"
                    assert after[sid].ledger_seq == old.ledger_seq, "the mark moves only when the row is sent"
                else:
                    assert row is None, (
                        f"reader {sid} got a row but their selection is empty or they are not plannable"
                    )
                    if selection is not None and (old.ledger_seq is None or old.ledger_seq < horizon):
                        assert after[sid].ledger_seq == horizon, (
                            "a reader with nothing is moved to the horizon"
                        )
                    else:
                        assert after[sid].ledger_seq == old.ledger_seq, (
                            "a reader not planned keeps their mark"
                        )
            assert len({r["message_id"] for r in rows.values()}) == len(rows)
        finally:
            services.close()
            if backend is not None:
                backend.drop()


def insert_readers(store: Any, readers: list[dict[str, Any]]) -> list[int]:
    now = AS_OF - timedelta(days=1)
    ids = []
    with store.engine.begin() as conn:
        for n, r in enumerate(readers):
            new_id = conn.execute(
                subscribers.insert().values(
                    email=f"reader{n}@example.org",
                    name=f"Reader {n}",
                    status=r["status"].value,
                    topics=list(r["topics"]),
                    cadence=r["cadence"].value,
                    paused=r["paused"],
                    created_at=now,
                    confirmed_at=now,
                    updated_at=now,
                    status_reason="",
                    last_digest_at=now if r["had_digest"] else None,
                    ledger_seq=r["mark"],
                )
            ).inserted_primary_key[0]
            if r["spaced_json"]:
                spaced = json.dumps(list(r["topics"]), separators=(" , ", " : "))
                conn.execute(
                    sa.text("UPDATE subscribers SET topics = :t WHERE id = :i"), {"t": spaced, "i": new_id}
                )
            ids.append(new_id)
    return ids


def owe_elsewhere(service: Any, subscriber_ids: list[int]) -> set[int]:
    """Give these readers a pending row in another, unfinished edition."""
    if not subscriber_ids:
        return set()
    store = service.store
    edition, _ = store.editions.create_edition(
        key="unfinished", schedule="manual", as_of=AS_OF - timedelta(days=1)
    )
    variant = store.editions.add_variant(
        edition_id=edition.id, report_ids=["p1"], subject="s", html="h", text="t"
    )
    store.outbox.add_deliveries(
        [
            {
                "edition_id": edition.id,
                "subscriber_id": s,
                "variant_id": variant,
                "email": f"x{s}@example.org",
                "name": "",
                "message_id": f"<u{s}@example.com>",
                "ledger_seq": 1,
                "carried": 0,
            }
            for s in subscriber_ids
        ]
    )
    return set(subscriber_ids)


def outbox(store: Any, edition_id: int) -> dict[int, dict[str, Any]]:
    with store.engine.connect() as conn:
        found = (
            conn.execute(sa.select(deliveries).where(deliveries.c.edition_id == edition_id)).mappings().all()
        )
    by_reader: dict[int, dict[str, Any]] = {}
    for row in found:
        assert row["subscriber_id"] not in by_reader, "two rows for one reader in one edition"
        by_reader[row["subscriber_id"]] = dict(row)
    return by_reader


def test_a_reader_who_changes_topics_while_planning_runs_is_left_owed_for_the_next_edition(make_service):
    """Groups are read before the rows are written: a reader whose topics change in between
    matches no group. They must get no row from a stale choice, keep their mark, and be
    planned by the next edition; a rerun of the same write adds nothing twice."""
    service = make_service(clock=FakeClock(AS_OF))
    store = service.store
    store.reports.upsert_reports(
        make_reports([0, 3] * (REPORTS // 2), [0] * REPORTS), now=AS_OF - timedelta(days=2)
    )
    insert_readers(store, [{**PLAIN, "topics": ["Cameras"]}, {**PLAIN, "topics": ["Cameras"]}])
    edition, _ = store.editions.create_edition(key="racing", schedule="manual", as_of=AS_OF)
    groups = store.planning.reader_groups(cadences=None, edition_id=edition.id)
    assert [g.readers for g in groups] == [2]
    variant = store.editions.add_variant(
        edition_id=edition.id, report_ids=["p7"], subject="s", html="h", text="t"
    )
    first, second = sorted(s.id for s in store.subscribers.list_subscribers())
    store.subscribers.update_preferences(second, topics=["Business"], cadence=Cadence.DAILY, paused=False)

    def write() -> int:
        return store.planning.write_choices(
            [GroupChoice(groups[0], variant, REPORTS)],
            edition_id=edition.id,
            cadences=None,
            horizon=REPORTS,
            message_id_affixes=("<t.", "@example.com>"),
        )

    assert write() == 1
    assert write() == 0, "a rerun (planning killed and started again) writes no reader twice"
    assert set(outbox(store, edition.id)) == {first}
    assert store.subscribers.get_subscriber(second).ledger_seq == PLAIN["mark"], "still owed"
    later = service.runner.run(key="next", as_of=AS_OF, fetch=False, send=False)
    assert {r["subscriber_id"] for r in outbox(store, later.edition.id).values()} == {second}
