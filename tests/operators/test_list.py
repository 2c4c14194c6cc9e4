"""`subscribers list` at scale: one page and a total, search, status, paging."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from newsletter.models import SubscriberStatus
from newsletter.storage.migrations import upgrade
from newsletter.storage.schema import subscribers
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber, import_csv
from tests.core.test_core_cli import ok
from tests.factories import bulk_subscribers


def test_list_prints_one_page_and_the_total_not_every_subscriber(cli, base_env):
    store = Store(base_env["NEWSLETTER_DATABASE_URL"])
    bulk_subscribers(store, 120)
    store.dispose()
    out = ok(cli("subscribers", "list"))
    assert out.count("@example.org") == 50
    assert "1-50 of 120 subscribers (page 1 of 3)" in out and "Next page: --page 2" in out
    out = ok(cli("subscribers", "list", "--page", "3"))
    assert out.count("@example.org") == 20 and "101-120 of 120" in out and "Next page" not in out


def test_list_search_matches_part_of_an_address_or_a_name_with_status_and_pages(store):
    for i in range(40):
        add_subscriber(store, f"reader{i:02d}@example.org", name=f"Reader {i}")
    add_subscriber(store, "ellen@example.net", name="Ellen HARTLEY")
    left, _ = add_subscriber(store, "hartley.left@example.net", name="Left")
    store.subscribers.set_status(left.id, SubscriberStatus.UNSUBSCRIBED)
    rows, total = store.subscribers.list_page(search="hartley")  # rare: the index path
    assert total == 2 and [r.email for r in rows] == ["ellen@example.net", "hartley.left@example.net"]
    rows, total = store.subscribers.list_page(search="Hartley", status=SubscriberStatus.ACTIVE)
    assert total == 1 and rows[0].email == "ellen@example.net"
    rows, total = store.subscribers.list_page(
        search="EXAMPLE.ORG", limit=5, offset=5
    )  # common: the table path
    assert total == 40 and [r.email for r in rows] == [f"reader{i:02d}@example.org" for i in range(5, 10)]
    rows, total = store.subscribers.list_page(search="reader3", limit=3, offset=9)  # rare, last page
    assert total == 10 and [r.email for r in rows] == ["reader39@example.org"]


def test_list_search_takes_percent_and_underscore_literally(store):
    add_subscriber(store, "a_b@example.org")
    add_subscriber(store, "axb@example.org")
    rows, total = store.subscribers.list_page(search="a_b")
    assert total == 1 and rows[0].email == "a_b@example.org"
    assert store.subscribers.list_page(search="%")[1] == 0


def search(store, term, status=None):
    rows, total = store.subscribers.list_page(search=term, status=status, limit=100)
    assert total == len(rows)
    return sorted(r.email for r in rows)


def test_search_index_stays_in_step_with_every_change_on_sqlite(store):
    """Migration 0010's trigram index answers terms of 3+ characters; it follows inserts,
    imports, renames and deletes, and shorter terms (no trigram) still match by a scan."""
    add_subscriber(store, "ellen.hartley@example.net", name="Ellen Quist")
    add_subscriber(store, "rate_100%@example.org", name="Percent Sign")
    add_subscriber(store, "ratex100x@example.org", name="Élise Marchand")
    import_csv(store, io.StringIO("email,name\nzoe@example.com,Zoe Hartley\nyan@example.com,Yan Li\n"))
    with store.engine.connect() as conn:  # the index itself holds the rows: the answers below come from it
        indexed = (
            conn.exec_driver_sql(
                "SELECT rowid FROM subscribers_search WHERE subscribers_search MATCH '\"hartley\"'"
            )
            .scalars()
            .all()
        )
    assert len(indexed) == 2
    assert search(store, "HARTLEY") == [
        "ellen.hartley@example.net",
        "zoe@example.com",
    ]  # address and name, any case
    assert search(store, "len.har") == ["ellen.hartley@example.net"]
    assert search(store, "élise") == search(store, "ÉLISE") == ["ratex100x@example.org"]
    assert (
        search(store, "e_100") == search(store, "100%") == ["rate_100%@example.org"]
    )  # % and _ are literal, not ratex100x
    assert search(store, '"quist') == [] and search(store, "n qui") == ["ellen.hartley@example.net"]
    assert (
        search(store, "quist*") == search(store, "har\x00tley") == search(store, "email:hartley") == []
    )  # no query syntax
    assert search(store, "li") == ["ratex100x@example.org", "yan@example.com"]  # short terms: the scan
    assert search(store, "%") == ["rate_100%@example.org"] and search(store, "_") == ["rate_100%@example.org"]
    assert search(store, "hartley", SubscriberStatus.ACTIVE) == [
        "ellen.hartley@example.net",
        "zoe@example.com",
    ]
    zoe = store.subscribers.find_subscriber("zoe@example.com")
    store.subscribers.set_status(zoe.id, SubscriberStatus.UNSUBSCRIBED)
    assert search(store, "hartley", SubscriberStatus.ACTIVE) == ["ellen.hartley@example.net"]
    import_csv(store, io.StringIO("email,name\nzoe@example.com,Zoe Marsh\n"), update=True)  # a rename
    assert search(store, "hartley") == ["ellen.hartley@example.net"] and search(store, "marsh") == [
        "zoe@example.com"
    ]
    store.subscribers.remove_subscriber("ellen.hartley@example.net")
    assert search(store, "hartley") == [] and search(store, "quist") == []
    add_subscriber(store, "new.hartley@example.org")
    assert search(store, "hartley") == ["new.hartley@example.org"]
    rows, total = store.subscribers.list_page(
        search="example", limit=2, offset=2
    )  # pages of index answers, in id order
    assert total == 5 and [r.email for r in rows] == ["zoe@example.com", "yan@example.com"]


def test_upgrade_to_0010_indexes_the_readers_already_there_on_sqlite(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(engine, "0009")
    with engine.begin() as conn:  # readers stored before the index existed
        conn.execute(
            subscribers.insert(),
            [dict(OLD_ROW, email=f"old{i}@example.org", name=f"Old Hartley {i}") for i in range(3)],
        )
    upgrade(engine)
    engine.dispose()
    store = Store(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        assert search(store, "hartley 1") == ["old1@example.org"] and len(search(store, "hartley")) == 3
        with store.engine.connect() as conn:
            assert (
                conn.exec_driver_sql(
                    "SELECT count(*) FROM subscribers_search WHERE subscribers_search MATCH '\"old hart\"'"
                ).scalar()
                == 3
            )
    finally:
        store.dispose()


OLD_ROW = {
    "status": "active",
    "topics": [],
    "cadence": "daily",
    "paused": False,
    "status_reason": "",
    "legacy_links": False,
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
}


def test_an_erased_reader_leaves_no_trace_of_address_or_name_in_the_sqlite_file(make_service):
    """`remove --forget` promises that no row names the person; the file must not either: SQLite
    keeps a deleted row's bytes in free space unless told to zero them (Debian's build does by
    default, others do not), and the search index keeps a deleted row's trigrams in older
    segments until they merge (forget merges them)."""
    service = make_service()
    store = service.store
    for n in range(300):  # company, so the erased reader's page and index segment hold others too
        store.subscribers.add_subscriber(email=f"neighbour{n}@example.org", name=f"Neighbour {n}")
    store.subscribers.add_subscriber(email="zqx.erasable@example.net", name="Wilhelmina Quuxley")
    for n in range(300, 400):
        store.subscribers.add_subscriber(email=f"neighbour{n}@example.org", name=f"Neighbour {n}")
    service.runner.run(key="before-erasure", fetch=False, send=False)  # outbox rows copy the address too
    assert store.subscribers.list_page(search="quuxley")[1] == 1

    assert store.subscribers.remove_subscriber("zqx.erasable@example.net", forget=True)

    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(store.url.removeprefix("sqlite:///"))
    data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    for trace in (b"zqx.erasable", b"Quuxley", b"uxley", b"erasab"):
        assert trace not in data, f"{trace!r} is still in the database file"
    assert store.subscribers.list_page(search="quuxley")[1] == 0
    assert store.subscribers.list_page(search="neighbour3")[1] == 111  # the others are still found
