"""Subscribers: address normalisation, validation, CSV import (bad rows reported), export."""

from __future__ import annotations

import io

import pytest

from newsletter.errors import InvalidAddress, SubscriberError
from newsletter.models import SubscriberStatus
from newsletter.storage.store import Store
from newsletter.subscriptions import (
    add_subscriber,
    clean_name,
    export_csv,
    export_text,
    import_csv,
    import_file,
    normalise_email,
    parse_topics,
)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/subs.sqlite")
    yield s
    s.dispose()


def test_domain_is_lowercased_and_whitespace_trimmed():
    assert normalise_email("  reader@EXAMPLE.Org ") == "reader@example.org"
    assert normalise_email("jose@BÜCHER.example") == "jose@bücher.example"
    # the local part is stored lower-case too: one mailbox, one subscriber
    assert normalise_email("Reader@example.org") == normalise_email("reader@example.org")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "plainaddress",
        "@example.org",
        "reader@",
        "reader@example",
        "two@@example.org",
        "a b@example.org",
        "reader@example.org\r\nBcc: x@example.org",
        "x\x00@example.org",
    ],
)
def test_invalid_addresses_are_refused_with_a_reason(bad):
    with pytest.raises(InvalidAddress) as excinfo:
        normalise_email(bad)
    assert excinfo.value.message and "\n" not in excinfo.value.message


def test_add_is_idempotent_and_normalises(store):
    first, created = add_subscriber(
        store, "Reader@EXAMPLE.org", name="  Ann   Reader ", topics="China; Government,China"
    )
    assert created
    assert first.email == "reader@example.org"
    assert first.name == "Ann Reader"
    assert first.topics == ("China", "Government")
    assert (
        first.status is SubscriberStatus.ACTIVE
        and first.confirmed_at is not None
        and first.created_at.tzinfo is not None
    )
    again, created = add_subscriber(store, "Reader@example.ORG", name="Other")
    assert not created and again.id == first.id and again.name == "Ann Reader"
    assert len(list(store.subscribers.list_subscribers())) == 1


def test_names_and_topics_with_line_breaks_are_refused(store):
    with pytest.raises(SubscriberError):
        add_subscriber(store, "a@example.org", name="Evil\r\nBcc: victim@example.org")
    with pytest.raises(SubscriberError):
        add_subscriber(store, "a@example.org", topics=["China\nBcc: x"])
    with pytest.raises(SubscriberError):
        clean_name("x" * 201)
    assert list(store.subscribers.list_subscribers()) == []
    assert parse_topics("") == ()


BAD_CSV = (
    "email,name,topics\n"  # line 1
    "good.one@example.org,Good One,China\n"  # line 2
    "not-an-address,Bad Address,\n"  # line 3
    "\n"  # line 4 (blank: skipped silently)
    "good.two@EXAMPLE.net,Good Two,\n"  # line 5
    "extra@example.org,Extra,China,surplus\n"  # line 6
    ",Empty Email,\n"  # line 7
    'evil@example.org,"Evil\nBcc: x@example.org",\n'  # lines 8-9
    'good.three@example.org,"Three, Jr.",Access Control;Business\n'  # line 10
)


def test_import_keeps_good_rows_and_reports_bad_ones_with_line_numbers(store):
    result = import_csv(store, io.StringIO(BAD_CSV, newline=""), source="list.csv")
    assert result.added == 3 and result.unchanged == 0
    messages = [e.message for e in result.errors]
    assert len(messages) == 4
    assert messages[0].startswith("list.csv line 3: ") and "not-an-address" in messages[0]
    assert messages[1].startswith("list.csv line 6: ") and "more fields" in messages[1]
    assert messages[2].startswith("list.csv line 7: ") and "empty" in messages[2]
    assert messages[3].startswith("list.csv line 8: ") or messages[3].startswith("list.csv line 9: ")
    assert "line break" in messages[3]
    assert all("\n" not in m for m in messages)
    emails = sorted(s.email for s in store.subscribers.list_subscribers())
    assert emails == ["good.one@example.org", "good.three@example.org", "good.two@example.net"]
    three = store.subscribers.find_subscriber("good.three@example.org")
    assert three.name == "Three, Jr." and three.topics == ("Access Control", "Business")
    assert all(s.status is SubscriberStatus.ACTIVE for s in store.subscribers.list_subscribers())


def test_bad_row_with_line_break_reports_the_line_where_the_record_starts(store):
    result = import_csv(store, io.StringIO(BAD_CSV, newline=""), source="list.csv")
    assert result.errors[3].message.startswith("list.csv line 8: ")


def test_importing_twice_changes_nothing(store, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(BAD_CSV, encoding="utf-8")
    import_file(store, path)
    before = [
        (s.id, s.email, s.name, s.topics, s.status, s.updated_at if hasattr(s, "updated_at") else None)
        for s in store.subscribers.list_subscribers()
    ]
    again = import_file(store, path)
    assert again.added == 0 and again.unchanged == 3 and len(again.errors) == 4
    after = [
        (s.id, s.email, s.name, s.topics, s.status, s.updated_at if hasattr(s, "updated_at") else None)
        for s in store.subscribers.list_subscribers()
    ]
    assert after == before


def test_import_without_email_column_and_unreadable_files(store, tmp_path):
    with pytest.raises(SubscriberError) as excinfo:
        import_csv(store, io.StringIO("name,topics\nAnn,China\n"), source="x.csv")
    assert "email" in excinfo.value.message
    with pytest.raises(SubscriberError):
        import_file(store, tmp_path / "missing.csv")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("email,name\nj@example.org,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(SubscriberError) as excinfo:
        import_file(store, latin)
    assert "UTF-8" in excinfo.value.message


def test_import_accepts_bom_and_header_case(store, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffEmail , Name\nann@example.org,Ann\n".encode("utf-8"))
    result = import_file(store, path)
    assert result.added == 1 and not result.errors
    assert store.subscribers.find_subscriber("ann@example.org").name == "Ann"


def test_export_round_trip(store, tmp_path):
    add_subscriber(store, "jose@example.net", name="José Núñez", topics="Access Control")
    add_subscriber(store, "ellen@example.org", name="Ellen Hartley, CPP", topics="Video Analytics;Business")
    add_subscriber(store, "dana@example.org", name='Dana "DW" Whitfield')
    text = export_text(store.subscribers.list_subscribers())
    assert text.splitlines()[0] == "email,name,topics,status,cadence,created_at,confirmed_at"
    other = Store(f"sqlite:///{tmp_path}/other.sqlite")
    try:
        result = import_csv(other, io.StringIO(text, newline=""), source="export")
        assert result.added == 3 and not result.errors
        original = {s.email: (s.name, s.topics, s.status) for s in store.subscribers.list_subscribers()}
        copied = {s.email: (s.name, s.topics, s.status) for s in other.subscribers.list_subscribers()}
        assert copied == original
    finally:
        other.dispose()


def test_export_round_trip_keeps_unsubscribed_status(store, tmp_path):
    gone, _ = add_subscriber(store, "gone@example.org", name="Gone")
    store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED)
    buffer = io.StringIO()
    assert export_csv(store.subscribers.list_subscribers(), buffer) == 1
    other = Store(f"sqlite:///{tmp_path}/other.sqlite")
    try:
        import_csv(other, io.StringIO(buffer.getvalue(), newline=""), source="export")
        assert other.subscribers.find_subscriber("gone@example.org").status is SubscriberStatus.UNSUBSCRIBED
    finally:
        other.dispose()


def test_export_neutralises_spreadsheet_formulas(store):
    add_subscriber(store, "f@example.org", name='=HYPERLINK("http://evil")')
    line = export_text(store.subscribers.list_subscribers()).splitlines()[1]
    assert ",'=HYPERLINK" in line or ",\"'=HYPERLINK" in line


def test_remove_subscriber(store):
    add_subscriber(store, "a@example.org")
    assert store.subscribers.remove_subscriber("a@example.org")
    assert not store.subscribers.remove_subscriber("a@example.org")
    assert store.subscribers.find_subscriber("a@example.org") is None
