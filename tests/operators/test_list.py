"""`subscribers list` at scale: one page and a total, search, status, paging."""

from __future__ import annotations

from newsletter.models import SubscriberStatus
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber
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
    rows, total = store.subscribers.list_page(search="EXAMPLE.ORG", limit=5, offset=5)  # common: the table path
    assert total == 40 and [r.email for r in rows] == [f"reader{i:02d}@example.org" for i in range(5, 10)]
    rows, total = store.subscribers.list_page(search="reader3", limit=3, offset=9)  # rare, last page
    assert total == 10 and [r.email for r in rows] == ["reader39@example.org"]


def test_list_search_takes_percent_and_underscore_literally(store):
    add_subscriber(store, "a_b@example.org")
    add_subscriber(store, "axb@example.org")
    rows, total = store.subscribers.list_page(search="a_b")
    assert total == 1 and rows[0].email == "a_b@example.org"
    assert store.subscribers.list_page(search="%")[1] == 0
