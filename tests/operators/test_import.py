"""Bulk import: other tools' exports, statuses honoured, batches, summary, bad rows, --update."""

from __future__ import annotations

import io
import shutil
import sys

import pytest
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidAddress, SubscriberError
from newsletter.models import Cadence, SubscriberStatus
from newsletter.storage.store import Store
from newsletter.subscriptions import add_subscriber, import_csv, import_file
from newsletter.subscriptions.addresses import normalise_email
from tests.core.test_core_cli import clean_error, ok

from .conftest import FIXTURES


def statuses(store: Store) -> dict[str, SubscriberStatus]:
    return {s.email: s.status for s in store.subscribers.list_subscribers()}


def test_mailchimp_export_with_email_address_column_is_imported_not_refused(store):
    result = import_file(store, FIXTURES / "mailchimp_subscribed.csv")
    assert result.format == "mailchimp"
    assert (result.added, result.invalid) == (3, 0)
    bob = store.subscribers.find_subscriber("bob.baker@example.net")
    assert bob.name == "Bob Baker" and bob.status is SubscriberStatus.ACTIVE
    assert store.subscribers.find_subscriber("carol@example.com").name == "Carol"
    # Merge fields and tags nothing reads are named, the tool's own metadata is set apart.
    assert result.unknown_columns == ("Company", "TAGS")
    assert "OPTIN_TIME" in result.ignored_columns and "LEID" in result.ignored_columns


def test_mailchimp_unsubscribed_and_cleaned_exports_never_come_in_active(store):
    assert import_file(store, FIXTURES / "mailchimp_unsubscribed.csv").suppressed == 1
    assert import_file(store, FIXTURES / "mailchimp_cleaned.csv").suppressed == 1
    assert statuses(store) == {
        "dave.left@example.org": SubscriberStatus.UNSUBSCRIBED,
        "erin.gone@example.org": SubscriberStatus.BOUNCED,
    }
    # They join the suppression list: removing the rows does not make them mailable again.
    assert store.suppressions.status_of("dave.left@example.org") is SubscriberStatus.UNSUBSCRIBED
    assert store.suppressions.status_of("erin.gone@example.org") is SubscriberStatus.BOUNCED


def test_listmonk_export_keeps_enabled_rows_and_never_activates_disabled_or_blocklisted(store):
    result = import_file(store, FIXTURES / "listmonk.csv")
    assert result.format == "listmonk" and result.invalid == 0, result.errors
    assert statuses(store) == {
        "fay@example.org": SubscriberStatus.ACTIVE,
        "gus@example.org": SubscriberStatus.UNSUBSCRIBED,
        "hal@example.org": SubscriberStatus.UNSUBSCRIBED,
    }
    assert (result.added, result.suppressed) == (1, 2)
    assert store.subscribers.find_subscriber("fay@example.org").name == "Fay Fisher"


def test_substack_email_disabled_readers_are_not_imported_as_active(store):
    result = import_file(store, FIXTURES / "substack.csv")
    assert result.format == "substack" and result.invalid == 0
    assert statuses(store) == {
        "ivy@example.org": SubscriberStatus.ACTIVE,
        "jon@example.org": SubscriberStatus.ACTIVE,
        "kim@example.org": SubscriberStatus.UNSUBSCRIBED,
    }


def test_ghost_members_not_subscribed_to_emails_or_deleted_are_not_active(store):
    result = import_file(store, FIXTURES / "ghost.csv")
    assert result.format == "ghost" and result.invalid == 0 and result.unknown_columns == ()
    assert statuses(store) == {
        "lea@example.org": SubscriberStatus.ACTIVE,
        "max@example.org": SubscriberStatus.UNSUBSCRIBED,
        "ned@example.org": SubscriberStatus.UNSUBSCRIBED,
    }


def test_excel_semicolon_csv_is_read_by_sniffing_the_delimiter(store):
    result = import_file(store, FIXTURES / "excel_semicolon.csv")
    assert result.delimiter == ";" and result.added == 2 and result.invalid == 0
    assert store.subscribers.find_subscriber("ola@example.org").topics == ("Access Control",)
    assert store.subscribers.find_subscriber("pia@example.org").name == "Pia; Jr."


def test_unknown_status_word_makes_the_row_invalid_never_active(store):
    result = import_csv(
        store, io.StringIO("email,status\na@example.org,snoozed\nb@example.org,enabled\n"), source="s.csv"
    )
    assert [e.message for e in result.errors] == [
        e.message for e in result.errors if e.message.startswith("s.csv line 2: status 'snoozed'")
    ]
    assert result.invalid == 1 and statuses(store) == {"b@example.org": SubscriberStatus.ACTIVE}


def test_format_option_and_map_option_choose_the_columns(store):
    text = "Kontakt,Vorname\nq@example.org,Quinn\n"
    with pytest.raises(SubscriberError) as excinfo:
        import_csv(store, io.StringIO(text), source="de.csv")
    # The refusal names the columns it saw and the two ways out.
    assert (
        "'Kontakt'" in excinfo.value.message
        and "--map" in excinfo.value.hint
        and "--format" in excinfo.value.hint
    )
    result = import_csv(
        store, io.StringIO(text), source="de.csv", mapping={"email": "Kontakt", "name": "Vorname"}
    )
    assert result.added == 1 and store.subscribers.find_subscriber("q@example.org").name == "Quinn"
    forced = import_csv(
        store, io.StringIO("email,email_disabled\nr@example.org,true\n"), source="x.csv", fmt="substack"
    )
    assert forced.format == "substack" and statuses(store)["r@example.org"] is SubscriberStatus.UNSUBSCRIBED


def test_import_writes_in_batches_not_one_transaction_per_row(store):
    inserts: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO SUBSCRIBERS"):
            # Rows of one statement: an executemany's parameter sets, or a multi-row VALUES list's groups.
            inserts.append(
                len(parameters) if executemany else statement.upper().split(" VALUES ", 1)[1].count("(")
            )

    sa.event.listen(store.engine, "before_cursor_execute", count)
    rows = "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(250))
    result = import_csv(store, io.StringIO("email,name\n" + rows), batch_size=100)
    assert result.added == 250
    assert inserts == [100, 100, 50]


def test_summary_counts_added_updated_unchanged_invalid_and_suppressed(store):
    gone, _ = add_subscriber(store, "gone@example.org")
    store.subscribers.set_status(gone.id, SubscriberStatus.UNSUBSCRIBED, reason="asked")
    store.subscribers.remove_subscriber("gone@example.org")
    add_subscriber(store, "kept@example.org", name="Kept")
    add_subscriber(store, "renamed@example.org", name="Old Name")
    text = (
        "email,name\nnew@example.org,New\nkept@example.org,Kept\n"
        "renamed@example.org,New Name\nnot-an-address,X\nGone@Example.org,Back Again\n"
    )
    result = import_csv(store, io.StringIO(text), update=True)
    assert result.summary() == "1 added, 1 updated, 1 unchanged, 1 invalid, 1 suppressed"
    # The suppression list outlived the row: the import brought the address back unsubscribed.
    assert store.subscribers.find_subscriber("gone@example.org").status is SubscriberStatus.UNSUBSCRIBED


def test_update_changes_names_topics_and_cadence_of_existing_readers(store):
    add_subscriber(store, "ann@example.org", name="Ann", topics="China")
    text = "email,name,topics,cadence\nann@example.org,Ann Archer,Access Control;Business,weekly\n"
    assert import_csv(store, io.StringIO(text)).unchanged == 1  # without --update nothing changes
    assert store.subscribers.find_subscriber("ann@example.org").name == "Ann"
    assert import_csv(store, io.StringIO(text), update=True).updated == 1
    ann = store.subscribers.find_subscriber("ann@example.org")
    assert (ann.name, ann.topics, ann.cadence) == (
        "Ann Archer",
        ("Access Control", "Business"),
        Cadence.WEEKLY,
    )
    # A file without a topics column leaves the topics alone.
    import_csv(store, io.StringIO("email,name\nann@example.org,A. Archer\n"), update=True)
    ann = store.subscribers.find_subscriber("ann@example.org")
    assert (ann.name, ann.topics) == ("A. Archer", ("Access Control", "Business"))


def test_update_never_reactivates_but_honours_an_unsubscribe(store):
    left, _ = add_subscriber(store, "left@example.org")
    store.subscribers.set_status(left.id, SubscriberStatus.BOUNCED, reason="550")
    add_subscriber(store, "stays@example.org")
    text = "email,status\nleft@example.org,active\nstays@example.org,unsubscribed\n"
    result = import_csv(store, io.StringIO(text), update=True)
    assert statuses(store) == {
        "left@example.org": SubscriberStatus.BOUNCED,
        "stays@example.org": SubscriberStatus.UNSUBSCRIBED,
    }
    assert (result.updated, result.unchanged) == (1, 1)
    assert store.suppressions.status_of("stays@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_the_same_address_twice_in_a_file_is_one_reader(store):
    result = import_csv(store, io.StringIO("email,name\na@example.org,First\nA@example.org,Second\n"))
    assert (result.added, result.unchanged) == (1, 1)
    assert store.subscribers.find_subscriber("a@example.org").name == "First"


def test_cli_import_prints_a_summary_a_few_bad_rows_and_writes_every_bad_row_with_errors(cli, tmp_path):
    rows = "".join(f"bad-{i},Bad\n" for i in range(30)) + "good@example.org,Good\n"
    source = tmp_path / "list.csv"
    source.write_text("email,name\n" + rows, encoding="utf-8")
    result = cli("subscribers", "import", str(source))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("invalid: line") == 10  # not thirty lines of noise
    assert "20 more; --errors FILE" in result.output
    assert "1 added, 0 updated, 0 unchanged, 30 invalid, 0 suppressed" in result.output
    errors = tmp_path / "bad.csv"
    result = cli("subscribers", "import", str(source), "--errors", str(errors))
    lines = errors.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "line,error,email,name"
    assert (
        len(lines) == 31
        and lines[1].startswith("2,")
        and lines[30].startswith("31,")
        and lines[1].endswith(",bad-0,Bad")
    )
    assert "0 added, 0 updated, 1 unchanged, 30 invalid" in result.output


def test_cli_import_reports_unknown_columns_and_the_format_it_read(cli, tmp_path):
    out = ok(cli("subscribers", "import", str(FIXTURES / "mailchimp_subscribed.csv")))
    assert "as mailchimp (comma-separated)" in out
    assert "Not imported: columns 'Company', 'TAGS'" in out
    assert "3 added" in out


def test_cli_import_without_a_terminal_prints_plain_progress_lines(cli, tmp_path, monkeypatch):
    module = sys.modules[
        "newsletter.cli.subscribers"
    ]  # the package attribute of that name is the command group
    monkeypatch.setattr(module, "PLAIN_PROGRESS_EVERY", 0.0)
    monkeypatch.setattr("newsletter.subscriptions.importer.BATCH_SIZE", 10)
    source = tmp_path / "list.csv"
    source.write_text("email\n" + "".join(f"r{i}@example.org\n" for i in range(25)), encoding="utf-8")
    out = ok(cli("subscribers", "import", str(source)))
    assert "importing: 25 of 25 lines read" in out
    assert "25 added" in out


def test_cli_import_names_a_wrong_encoding_with_a_hint_and_reads_it_when_named(cli, tmp_path):
    source = tmp_path / "excel.csv"
    source.write_bytes("E-Mail;Name\r\njose@example.org;José\r\n".encode("cp1252"))
    out = clean_error(cli("subscribers", "import", str(source)))
    assert "not UTF-8" in out and "--encoding cp1252" in out
    ok(cli("subscribers", "import", str(source), "--encoding", "cp1252"))


def test_cli_map_option_is_checked(cli, tmp_path):
    source = tmp_path / "x.csv"
    shutil.copy(FIXTURES / "excel_semicolon.csv", source)
    out = clean_error(cli("subscribers", "import", str(source), "--map", "mail=E-Mail"))
    assert "--map 'mail=E-Mail' is not FIELD=COLUMN" in out
    ok(cli("subscribers", "import", str(source), "--map", 'email="E-Mail"'))


def test_addresses_at_a_known_domain_get_exactly_email_validators_answer():
    """The shortcut for a domain already accepted (imports check each domain once) answers
    as email-validator does, or leaves the address to it: never a different result."""
    domains = (
        "example.org",
        "Example.ORG",
        "bücher.example",
        "xn--bcher-kva.example",
        "example.org.",
        "localhost",
        "a" * 63 + ".example",
    )
    locals_ = (
        "ann",
        "Ann.O'Neil",
        "a+b",
        "a..b",
        ".a",
        "a.",
        "a b",
        '"a b"',
        "a@b",
        "postmaster",
        "é",
        "x" * 64,
        "x" * 65,
        "x" * 190,
        "",
        "a\\b",
        "{}|~",
    )
    for domain in domains:
        for local in locals_:
            address = f"{local}@{domain}"
            for _ in range(2):  # the second time the domain is known
                try:
                    expected = validate_email(address, check_deliverability=False).normalized.lower()
                except EmailNotValidError:
                    expected = None
                try:
                    ours = normalise_email(address)
                except InvalidAddress:
                    ours = None
                assert ours == expected, address
