"""Who gets what: settle time, the first-digest cap, topics, paused/bounced/weekly subscribers,
signed tokens, previews, and internationalised addresses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from newsletter.content.planner import Ledger, select_reports, wants
from newsletter.errors import TokenError
from newsletter.models import Cadence, DeliveryState, EditionStatus, Report, Subscriber, SubscriberStatus
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Purpose, TokenSigner
from tests.factories import SECRET_KEY, Item, utc, write_rss
from tests.invariants import check_delivery, parse

from .helpers import parts

AS_OF = utc(2018, 8, 22)


def report(i: int, topics=("China",), hours=0) -> Report:
    """Report i, stored i-th (seq i), published i hours into August 2018 (plus ``hours``)."""
    return Report(
        f"r{i}",
        f"Report {i}",
        f"https://example.com/reports/r{i}",
        utc(2018, 8, 1) + timedelta(hours=i + hours),
        "t",
        tuple(topics),
        seq=i,
    )


def subscriber(topics=(), last=None, mark=None) -> Subscriber:
    return Subscriber(
        1, "a@example.org", "", SubscriberStatus.ACTIVE, tuple(topics), last_digest_at=last, ledger_seq=mark
    )


def ledger(reports: list[Report], horizon: int | None = None) -> Ledger:
    """The ledger planning would read: owed in seq order, recent newest first."""
    horizon = max(r.seq for r in reports) if horizon is None else horizon
    kept = [r for r in reports if r.seq <= horizon]
    return Ledger(
        horizon, sorted(kept, key=lambda r: r.seq), sorted(kept, key=lambda r: r.published, reverse=True)
    )


def test_topic_match_is_case_insensitive_and_empty_means_all():
    r = report(1, topics=("Access Control", "China"))
    assert wants(subscriber(("access control",)), r)
    assert wants(subscriber(), r)
    assert not wants(subscriber(("Business",)), r)
    assert not wants(subscriber(("China",)), report(2, topics=()))


def test_first_digest_takes_the_newest_max_reports():
    book = ledger([report(i) for i in range(1, 21)])
    selection = select_reports(subscriber(), book, max_reports=5)
    assert [r.id for r in selection.reports] == ["r20", "r19", "r18", "r17", "r16"]
    assert "first digest" in selection.reason and selection.mark == 20


def test_later_digest_takes_only_what_was_stored_after_the_mark():
    book = ledger([report(i) for i in range(1, 21)])
    selection = select_reports(subscriber(last=AS_OF, mark=17), book, max_reports=10)
    assert [r.id for r in selection.reports] == ["r20", "r19", "r18"]
    assert selection.mark == 20 and selection.carried == 0


def test_late_and_backdated_reports_are_still_new_for_the_reader():
    """Regression: "new for you" was decided by pubDate against the last digest, so a report
    stored after that digest but dated before it was skipped for every reader, for ever."""
    stored = [report(i) for i in range(1, 11)] + [
        report(11, hours=-200),
        report(12, hours=-5000),
    ]  # dated days and months back
    selection = select_reports(subscriber(last=AS_OF, mark=10), ledger(stored), max_reports=10)
    assert {r.id for r in selection.reports} == {"r11", "r12"}
    assert [r.id for r in selection.reports] == ["r11", "r12"]  # still shown newest first by date


def test_overflow_is_carried_to_the_next_digest_not_dropped():
    """Regression: over digest.max_reports, the newest were sent and the rest never were."""
    book = ledger([report(i) for i in range(1, 26)])
    first = select_reports(subscriber(last=AS_OF, mark=0), book, max_reports=10)
    assert (
        [r.seq for r in first.reports] == list(range(10, 0, -1)) and first.mark == 10 and first.carried == 15
    )
    assert "15 more carried to the next digest" in first.reason
    second = select_reports(subscriber(last=AS_OF, mark=first.mark), book, max_reports=10)
    third = select_reports(subscriber(last=AS_OF, mark=second.mark), book, max_reports=10)
    given = [r.seq for s in (first, second, third) for r in s.reports]
    assert sorted(given) == list(range(1, 26)) and third.carried == 0 and third.mark == 25


def test_settle_horizon_leaves_fresh_reports_and_everything_after_them_for_the_next_edition():
    book = ledger([report(i) for i in range(1, 6)], horizon=3)  # r4 still settling
    selection = select_reports(subscriber(last=AS_OF, mark=0), book, max_reports=10)
    assert [r.id for r in selection.reports] == ["r3", "r2", "r1"] and selection.mark == 3


def test_settle_time_in_an_edition(make_service, sink, tmp_path):
    items = [
        Item("Old enough", "old", AS_OF - timedelta(hours=2), topics=["China"]),
        Item("Too fresh", "fresh", AS_OF - timedelta(minutes=5), topics=["China"]),
    ]
    feed = write_rss(tmp_path / "feed.xml", items)
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_REPORTS_SETTLE="600")
    add_subscriber(service.store, "reader@example.org")
    first = service.runner.run(key="e1", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), first.edition)
    (m,) = inv.messages_by_rcpt["reader@example.org"]
    text, _ = parts(parse(m.raw))
    assert "Old enough" in text and "Too fresh" not in text
    second = service.runner.run(key="e2", as_of=AS_OF + timedelta(hours=1))
    inv = check_delivery(service.store, service.signer, sink.messages(), second.edition)
    (m,) = inv.messages_by_rcpt["reader@example.org"]
    text, _ = parts(parse(m.raw))
    assert "Too fresh" in text and "Old enough" not in text


def test_max_reports_setting(make_service, sink):
    service = make_service(NEWSLETTER_DIGEST_MAX_REPORTS="3")
    add_subscriber(service.store, "reader@example.org")
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    (m,) = inv.messages_by_rcpt["reader@example.org"]
    text, _ = parts(parse(m.raw))
    assert (
        "3 new reports" in text
        and "\n3. " in text.replace("\r\n", "\n")
        and "\n4. " not in text.replace("\r\n", "\n")
    )
    (variant,) = service.store.editions.list_variants(result.edition.id)
    assert len(variant.report_ids) == 3


def test_paused_bounced_pending_and_other_cadence_get_nothing(make_service, sink):
    service = make_service()
    store = service.store
    add_subscriber(store, "active@example.org")
    paused, _ = add_subscriber(store, "paused@example.org")
    store.subscribers.update_preferences(paused.id, topics=(), cadence=Cadence.DAILY, paused=True)
    bounced, _ = add_subscriber(store, "bounced@example.org")
    store.subscribers.set_status(bounced.id, SubscriberStatus.BOUNCED)
    add_subscriber(store, "pending@example.org", status=SubscriberStatus.PENDING)
    weekly, _ = add_subscriber(store, "weekly@example.org")
    store.subscribers.update_preferences(weekly.id, topics=(), cadence=Cadence.WEEKLY, paused=False)
    result = service.runner.run(key="daily-1", schedule="daily", cadences=[Cadence.DAILY], as_of=AS_OF)
    never = ["paused@example.org", "bounced@example.org", "pending@example.org", "weekly@example.org"]
    inv = check_delivery(store, service.signer, sink.messages(), result.edition, never=never)
    assert set(inv.by_email) == {"active@example.org"}
    weekly_run = service.runner.run(key="weekly-1", schedule="weekly", cadences=[Cadence.WEEKLY], as_of=AS_OF)
    inv = check_delivery(store, service.signer, sink.messages(), weekly_run.edition, never=never[:3])
    assert set(inv.by_email) == {"weekly@example.org"}


def test_tokens_are_bound_to_purpose_and_key():
    signer = TokenSigner(SECRET_KEY)
    token = signer.make(Purpose.UNSUBSCRIBE, 42)
    assert signer.read(Purpose.UNSUBSCRIBE, token) == 42
    assert "=" not in token and "/" not in token
    with pytest.raises(TokenError):
        signer.read(Purpose.PREFERENCES, token)
    with pytest.raises(TokenError):
        TokenSigner("another-key-that-is-also-long-enough-0123").read(Purpose.UNSUBSCRIBE, token)
    with pytest.raises(TokenError):
        signer.read(Purpose.UNSUBSCRIBE, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with pytest.raises(TokenError):
        TokenSigner("")
    with pytest.raises(TokenError, match="shorter than 32 bytes"):
        TokenSigner("abc")  # a 3-character key used to be accepted


def test_preference_link_in_the_mail_is_signed_for_preferences(sample_service, sink):
    result = sample_service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(sample_service.store, sample_service.signer, sink.messages(), result.edition)
    for rcpt, (m,) in inv.messages_by_rcpt.items():
        text, _ = parts(parse(m.raw))
        lines = text.splitlines()
        line = lines[lines.index("Change topics or frequency:") + 1]  # the link on the line of its own
        token = line.rsplit("/", 1)[1].strip()
        assert sample_service.signer.read(Purpose.PREFERENCES, token) == inv.by_email[rcpt].subscriber_id


def test_preview_renders_without_sending_and_is_empty_after_a_digest(sample_service, sink):
    from newsletter.editions.preview import render_preview

    sample_service.runner.ingest()
    before = render_preview(sample_service.runner, email="marcus.oyelaran@example.net")
    assert before.subject.startswith(before.selection.reports[0].title[:30])  # the headline leads
    assert before.selection.reports and all(
        {"China", "Government"} & set(r.topics) for r in before.selection.reports
    )
    assert "%%" not in before.html and "%%" not in before.text
    assert (
        before.message.endswith(b"\r\n")
        and b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in before.message
    )
    assert sink.messages() == []
    sample_service.runner.run(key="k", fetch=False)
    after = render_preview(sample_service.runner, email="marcus.oyelaran@example.net")
    assert after.selection.reports == () and after.html == "" and after.message == b""


def test_internationalised_address_without_a_display_name_is_delivered(make_service, sink):
    service = make_service()
    add_subscriber(service.store, "jose@bücher.example")
    add_subscriber(service.store, "ünïcode@example.org", name="Plain Name")
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    assert set(inv.messages_by_rcpt) == {"jose@bücher.example", "ünïcode@example.org"}
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}


def test_internationalised_address_with_a_non_ascii_name_is_delivered(make_service, sink):
    service = make_service()
    add_subscriber(service.store, "jose@bücher.example", name="José Núñez")
    add_subscriber(service.store, "ok@example.org", name="Ok")
    result = service.runner.run(key="k", as_of=AS_OF)
    inv = check_delivery(service.store, service.signer, sink.messages(), result.edition)
    assert {r.state for r in inv.rows} == {DeliveryState.SENT}
    (m,) = inv.messages_by_rcpt["jose@bücher.example"]
    assert parse(m.raw)["To"].addresses[0].display_name == "José Núñez"
    assert result.edition.status is EditionStatus.SENT
