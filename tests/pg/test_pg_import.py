"""Bulk import and listing on PostgreSQL: the batched insert, the suppression rules, --update, search."""

from __future__ import annotations

import io

from newsletter.models import SubscriberStatus
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber, import_csv, import_file
from tests.operators.conftest import FIXTURES


def test_batched_import_and_search_on_postgresql(pg_url):
    store = Store(pg_url)
    try:
        gone, _ = add_subscriber(store, "gone@example.org")
        store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED, reason="asked")
        store.subscribers.remove_subscriber("gone@example.org")
        rows = "".join(f"reader{i}@example.org,Reader {i},China\n" for i in range(250))
        result = import_csv(store, io.StringIO("email,name,topics\n" + rows + "gone@example.org,Back,\n"), batch_size=100)
        assert (result.added, result.suppressed, result.invalid) == (250, 1, 0)
        assert store.subscribers.find_subscriber("gone@example.org").status is SubscriberStatus.UNSUBSCRIBED
        assert store.subscribers.find_subscriber("reader7@example.org").topics == ("China",)
        updated = import_csv(store, io.StringIO("email,name,cadence\nreader7@example.org,Seven,weekly\n"), update=True)
        assert updated.updated == 1 and store.subscribers.find_subscriber("reader7@example.org").name == "Seven"
        assert import_file(store, FIXTURES / "listmonk.csv").suppressed == 2
        page, total = store.subscribers.list_page(search="READER1", limit=5)
        assert total == 111 and len(page) == 5  # reader1, reader10-19, reader100-199
        page, total = store.subscribers.list_page(search="seven", status=SubscriberStatus.ACTIVE)
        assert total == 1 and page[0].email == "reader7@example.org"
    finally:
        store.dispose()
