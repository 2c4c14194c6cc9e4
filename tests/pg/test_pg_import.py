"""Bulk import and listing on PostgreSQL: COPY of new rows, the suppression rules, --update,
search by trigram index."""

from __future__ import annotations

import io

import sqlalchemy as sa

from newsletter.models import SubscriberStatus
from newsletter.storage.schema import subscribers, suppressions
from newsletter.storage.store import Store
from newsletter.storage.suppressions import mailbox_hash
from newsletter.subscriptions import add_subscriber, import_csv, import_file
from tests.operators.conftest import FIXTURES


def test_batched_import_and_search_on_postgresql(pg_url):
    store = Store(pg_url)
    try:
        gone, _ = add_subscriber(store, "gone@example.org")
        store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED, reason="asked")
        store.subscribers.remove_subscriber("gone@example.org")
        rows = "".join(f"reader{i}@example.org,Reader {i},China\n" for i in range(250))
        result = import_csv(
            store, io.StringIO("email,name,topics\n" + rows + "gone@example.org,Back,\n"), batch_size=100
        )
        assert (result.added, result.suppressed, result.invalid) == (250, 1, 0)
        assert store.subscribers.find_subscriber("gone@example.org").status is SubscriberStatus.UNSUBSCRIBED
        assert store.subscribers.find_subscriber("reader7@example.org").topics == ("China",)
        updated = import_csv(
            store, io.StringIO("email,name,cadence\nreader7@example.org,Seven,weekly\n"), update=True
        )
        assert (
            updated.updated == 1 and store.subscribers.find_subscriber("reader7@example.org").name == "Seven"
        )
        assert import_file(store, FIXTURES / "listmonk.csv").suppressed == 2
        page, total = store.subscribers.list_page(search="READER1", limit=5)
        assert total == 111 and len(page) == 5  # reader1, reader10-19, reader100-199
        page, total = store.subscribers.list_page(search="seven", status=SubscriberStatus.ACTIVE)
        assert total == 1 and page[0].email == "reader7@example.org"
    finally:
        store.dispose()


def all_rows(store):
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                subscribers.c.email,
                subscribers.c.name,
                subscribers.c.status,
                subscribers.c.topics,
                subscribers.c.cadence,
                subscribers.c.status_reason,
                subscribers.c.confirmed_at,
            ).order_by(subscribers.c.id)
        ).all()
        held = dict(conn.execute(sa.select(suppressions.c.mailbox_hash, suppressions.c.status)).all())
    return [(e, n, s, t, c, r, confirmed is not None) for e, n, s, t, c, r, confirmed in rows], held


def test_import_copies_new_rows_in_and_keeps_every_rule_on_postgresql(pg_url, tmp_path):
    """Good rows, bad rows, an address on the suppression list, rows the file marks as left,
    a repeated address, then --update: the exact rows and suppressions that result."""
    store = Store(pg_url)
    statements: list[str] = []
    sa.event.listen(
        store.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: statements.append(statement),
    )
    try:
        gone, _ = add_subscriber(store, "gone@example.org")
        store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED, reason="asked")
        store.subscribers.remove_subscriber("gone@example.org")
        add_subscriber(store, "kept@example.org", name="Kept", topics="China")
        source = tmp_path / "list.csv"
        source.write_text(
            "email,name,topics,status,cadence\n"
            "Ann@Example.org,Ann O'Neil,Access Control;China,,weekly\n"
            "not-an-address,Bad,,,\n"
            "gone@example.org,Gone Back,,,\n"
            "left@example.org,Left,,unsubscribed,\n"
            "kept@example.org,Kept Renamed,Video,,\n"
            "bea@example.org,Bea \\tab,,,\n"
            "ann@example.org,Ann Twice,,,\n"
            "cy@example.org,Cy,,snoozed,\n",
            encoding="utf-8",
        )
        statements.clear()
        result = import_file(store, source, batch_size=3)
        assert (result.added, result.updated, result.unchanged, result.invalid, result.suppressed) == (
            2,
            0,
            2,
            2,
            2,
        )
        assert [bad.line for bad in result.bad_rows] == [3, 9]
        assert not [
            s for s in statements if s.lstrip().upper().startswith("INSERT INTO SUBSCRIBERS")
        ]  # new rows came by COPY
        rows, held = all_rows(store)
        assert rows == [
            ("kept@example.org", "Kept", "active", ["China"], "daily", "", True),
            ("ann@example.org", "Ann O'Neil", "active", ["Access Control", "China"], "weekly", "", True),
            (
                "gone@example.org",
                "Gone Back",
                "unsubscribed",
                [],
                "daily",
                "on the suppression list (unsubscribed);"
                " only a confirmation or 'subscribers reactivate' brings it back",
                False,
            ),
            ("left@example.org", "Left", "unsubscribed", [], "daily", "imported as unsubscribed", False),
            ("bea@example.org", "Bea \\tab", "active", [], "daily", "", True),
        ]
        assert held == {
            mailbox_hash("gone@example.org"): "unsubscribed",
            mailbox_hash("left@example.org"): "unsubscribed",
        }

        again = import_file(store, source, update=True, batch_size=3)
        assert (again.added, again.updated, again.unchanged, again.invalid, again.suppressed) == (
            0,
            2,
            4,
            2,
            0,
        )  # kept and the second ann row change; batches of 3 split the two ann rows
        rows, held_after = all_rows(store)
        assert rows == [
            ("kept@example.org", "Kept Renamed", "active", ["Video"], "daily", "", True),
            (
                "ann@example.org",
                "Ann Twice",
                "active",
                [],
                "daily",
                "",
                True,
            ),  # the last row of an address wins, empty cadence = daily
            (
                "gone@example.org",
                "Gone Back",
                "unsubscribed",
                [],
                "daily",
                "on the suppression list (unsubscribed);"
                " only a confirmation or 'subscribers reactivate' brings it back",
                False,
            ),
            ("left@example.org", "Left", "unsubscribed", [], "daily", "imported as unsubscribed", False),
            ("bea@example.org", "Bea \\tab", "active", [], "daily", "", True),
        ]
        assert held_after == held and store.subscribers.find_subscriber("ann@example.org").ledger_seq is None
    finally:
        store.dispose()


def pg_search(store, term, status=None):
    rows, total = store.subscribers.list_page(search=term, status=status, limit=100)
    assert total == len(rows)
    return sorted(r.email for r in rows)


def test_search_by_trigram_index_stays_in_step_with_every_change_on_postgresql(pg_url):
    store = Store(pg_url)
    try:
        with store.engine.connect() as conn:
            indexes = set(
                conn.execute(
                    sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'subscribers'")
                ).scalars()
            )
        assert {"ix_subscribers_email_trgm", "ix_subscribers_name_trgm"} <= indexes
        add_subscriber(store, "ellen.hartley@example.net", name="Ellen Quist")
        add_subscriber(store, "rate_100%@example.org", name="Percent Sign")
        add_subscriber(store, "ratex100x@example.org", name="Rex")
        import_csv(store, io.StringIO("email,name\nzoe@example.com,Zoe Hartley\nyan@example.com,Yan Li\n"))
        assert pg_search(store, "HARTLEY") == ["ellen.hartley@example.net", "zoe@example.com"]
        assert pg_search(store, "e_100") == pg_search(store, "100%") == ["rate_100%@example.org"]
        assert pg_search(store, "li") == ["yan@example.com"] and pg_search(store, "_") == [
            "rate_100%@example.org"
        ]
        assert (
            pg_search(store, "n qui") == ["ellen.hartley@example.net"]
            and pg_search(store, "har\x00tley") == []
        )
        import_csv(store, io.StringIO("email,name\nzoe@example.com,Zoe Marsh\n"), update=True)
        assert pg_search(store, "hartley") == ["ellen.hartley@example.net"] and pg_search(store, "MARSH") == [
            "zoe@example.com"
        ]
        store.subscribers.remove_subscriber("ellen.hartley@example.net")
        add_subscriber(store, "new.hartley@example.org")
        assert pg_search(store, "hartley") == ["new.hartley@example.org"]
        assert pg_search(store, "hartley", SubscriberStatus.UNSUBSCRIBED) == []

        # At scale the statement the listing sends is answered by the trigram indexes, not a scan.
        with (
            store.engine.begin() as conn
        ):  # 200,000 readers made in the server: the setup, not what is tested
            conn.exec_driver_sql(
                "INSERT INTO subscribers (email, name, status, topics, cadence, paused, created_at,"
                " updated_at, status_reason, legacy_links)"
                " SELECT 'reader' || i || '@example.org', 'Reader ' || i, 'active', '[]', 'daily', false,"
                " now(), now(), '', false"
                " FROM generate_series(1, 200000) AS i"
            )
            conn.exec_driver_sql("ANALYZE subscribers")
        seen: list[tuple[str, object]] = []
        sa.event.listen(
            store.engine,
            "before_cursor_execute",
            lambda conn, cursor, statement, params, *rest: seen.append((statement, params)),
        )
        assert store.subscribers.list_page(search="hartley")[1] == 1
        statement, params = next((s, p) for s, p in seen if "count(" in s.lower())
        with store.engine.connect() as conn:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, params).scalars())
        assert "ix_subscribers_email_trgm" in plan and "ix_subscribers_name_trgm" in plan
    finally:
        store.dispose()
