"""Confirm, unsubscribe (page and RFC 8058 one-click), preferences and /manage links."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.models import Cadence, SubscriberStatus
from newsletter.service import Service
from newsletter.tokens import Purpose, TokenSigner
from tests.factories import SECRET_KEY, FakeClock

from .helpers import Web, link_path, make_settings, unsubscribe_path

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def status_of(web: Web, email: str) -> SubscriberStatus:
    subscriber = web.store.subscribers.find_subscriber(email)
    assert subscriber is not None
    return subscriber.status


def confirmation_for(web: Web, email: str) -> str:
    web.subscribe(email)
    return link_path(web.one_mail(email), "/confirm/")


def test_confirm_get_changes_nothing_and_post_confirms(web: Web) -> None:
    path = confirmation_for(web, "reader@example.org")
    page = web.client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text and ">Confirm</button>" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert status_of(web, "reader@example.org") is SubscriberStatus.PENDING
    done = web.client.post(path)
    assert done.status_code == 200 and "You are subscribed" in done.text and "/preferences/" in done.text
    assert status_of(web, "reader@example.org") is SubscriberStatus.ACTIVE
    assert web.client.post(path).status_code == 200  # confirming twice is harmless
    assert status_of(web, "reader@example.org") is SubscriberStatus.ACTIVE


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tampered_and_wrong_purpose_confirm_tokens_are_refused(web: Web, method: str) -> None:
    path = confirmation_for(web, "victim@example.org")
    subscriber_id = web.store.subscribers.find_subscriber("victim@example.org").id
    wrong_purpose = "/confirm/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id)
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    for bad in (tampered, wrong_purpose, "/confirm/garbage"):
        page = web.client.request(method, bad)
        assert page.status_code == 400, bad
        assert "does not work" in page.text and "Sign up again" in page.text
    assert status_of(web, "victim@example.org") is SubscriberStatus.PENDING


def test_expired_confirm_token_is_refused(tmp_path, smtp_sink, make_web) -> None:  # type: ignore[no-untyped-def]
    # A real signer whose confirm links expire at once: any token it checks is too old.
    service = Service(make_settings(tmp_path, smtp_port=smtp_sink.port))
    service._signer = TokenSigner(SECRET_KEY, confirm_max_age=-1)
    web = make_web(service=service)
    subscriber_id = web.add("late@example.org", SubscriberStatus.PENDING)
    page = web.client.post("/confirm/" + service.signer.make(Purpose.CONFIRM, subscriber_id))
    assert page.status_code == 400 and "expired" in page.text
    assert status_of(web, "late@example.org") is SubscriberStatus.PENDING


def test_unsubscribe_get_shows_a_button_and_never_unsubscribes(web: Web) -> None:
    subscriber_id = web.add("keep@example.org")
    path = "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id)
    page = web.client.get(path)
    assert page.status_code == 200 and ">Unsubscribe</button>" in page.text and "/preferences/" in page.text
    assert status_of(web, "keep@example.org") is SubscriberStatus.ACTIVE


def test_unsubscribe_button_post_unsubscribes(web: Web) -> None:
    subscriber_id = web.add("leave@example.org")
    page = web.client.post("/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id))
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert status_of(web, "leave@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_one_click_post_needs_no_cookie_answers_200_and_is_idempotent(web: Web) -> None:
    subscriber_id = web.add("oneclick@example.org")
    path = "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id)
    # What a mailbox provider sends: a bare form post, no cookies, no CSRF token, no redirects followed.
    for _ in range(2):
        answer = web.client.post(
            path, data=ONE_CLICK, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert (
            answer.status_code == 200
            and "location" not in answer.headers
            and "set-cookie" not in answer.headers
        )
        assert status_of(web, "oneclick@example.org") is SubscriberStatus.UNSUBSCRIBED
    # RFC 8058 allows multipart/form-data as well.
    other = web.add("multipart@example.org")
    answer = web.client.post(
        "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, other),
        files={"List-Unsubscribe": (None, "One-Click")},
    )
    assert (
        answer.status_code == 200 and status_of(web, "multipart@example.org") is SubscriberStatus.UNSUBSCRIBED
    )


def test_one_click_works_on_the_confirmation_mail(web: Web) -> None:
    web.subscribe("annoyed@example.org")
    path = unsubscribe_path(web.one_mail("annoyed@example.org"))
    answer = web.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert status_of(web, "annoyed@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribe_with_a_bad_token_is_400_and_changes_nothing(web: Web) -> None:
    subscriber_id = web.add("safe@example.org")
    for path in (
        "/unsubscribe/nonsense",
        "/unsubscribe/" + web.service.signer.make(Purpose.PREFERENCES, subscriber_id),
    ):
        assert web.client.post(path, data=ONE_CLICK).status_code == 400
        assert web.client.get(path).status_code == 400
    assert status_of(web, "safe@example.org") is SubscriberStatus.ACTIVE


def test_unsubscribe_does_not_resurrect_or_mask_a_bounce(web: Web) -> None:
    subscriber_id = web.add("gone@example.org", SubscriberStatus.BOUNCED)
    assert (
        web.client.post(
            "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id), data=ONE_CLICK
        ).status_code
        == 200
    )
    assert status_of(web, "gone@example.org") is SubscriberStatus.BOUNCED


def test_preferences_get_shows_choices_and_post_saves_them(web: Web) -> None:
    topics = web.store.reports.all_topics()
    subscriber_id = web.add("tuner@example.org")
    path = "/preferences/" + web.service.signer.make(Purpose.PREFERENCES, subscriber_id)
    page = web.client.get(path)
    assert page.status_code == 200 and all(f'value="{t}"' in page.text for t in topics)
    assert 'value="weekly"' in page.text and 'name="paused"' in page.text
    saved = web.client.post(path, data={"topics": topics[:2], "cadence": "weekly", "paused": "1"})
    assert saved.status_code == 200 and "Saved." in saved.text
    subscriber = web.store.subscribers.get_subscriber(subscriber_id)
    assert (
        subscriber.topics == tuple(topics[:2]) and subscriber.cadence is Cadence.WEEKLY and subscriber.paused
    )
    web.client.post(path, data={"cadence": "daily"})
    subscriber = web.store.subscribers.get_subscriber(subscriber_id)
    assert subscriber.topics == () and subscriber.cadence is Cadence.DAILY and not subscriber.paused


@pytest.mark.parametrize("data", [{"topics": "Not A Topic"}, {"cadence": "hourly"}, {"topics": "x" * 61}])
def test_preferences_refuse_unknown_values(web: Web, data: dict[str, str]) -> None:
    subscriber_id = web.add("strict@example.org", topics=("China",))
    path = "/preferences/" + web.service.signer.make(Purpose.PREFERENCES, subscriber_id)
    assert web.client.post(path, data=data).status_code == 400
    assert web.store.subscribers.get_subscriber(subscriber_id).topics == ("China",)


def test_paused_reader_is_skipped_by_the_next_send(web: Web) -> None:
    pauser = web.add("pauser@example.org")
    web.add("steady@example.org")
    web.client.post(
        "/preferences/" + web.service.signer.make(Purpose.PREFERENCES, pauser),
        data={"cadence": "daily", "paused": "1"},
    )
    web.service.runner.run(key="after-pause", fetch=False)
    web.sink.wait_for(to="steady@example.org", timeout=5)
    assert web.mails("pauser@example.org") == []


def test_manage_mails_a_link_only_to_subscribers_and_answers_the_same(web: Web) -> None:
    subscriber_id = web.add("member@example.org")
    known = web.client.post("/manage", data={"email": "member@example.org"})
    unknown = web.client.post("/manage", data={"email": "stranger@example.org"})
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text) == (200, known.text)
    mail = web.one_mail("member@example.org")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = link_path(mail, "/manage/")
    page = web.client.get(path)
    assert page.status_code == 200 and "Your preferences" in page.text and f'action="{path}"' in page.text
    web.client.post(path, data={"cadence": "weekly"})
    assert web.store.subscribers.get_subscriber(subscriber_id).cadence is Cadence.WEEKLY
    assert web.mails("stranger@example.org") == []


def test_manage_page_and_link_tokens_are_purpose_bound(web: Web) -> None:
    assert web.client.get("/manage").status_code == 200
    subscriber_id = web.add("bound@example.org")
    assert (
        web.client.get("/manage/" + web.service.signer.make(Purpose.PREFERENCES, subscriber_id)).status_code
        == 400
    )
    assert (
        web.client.get("/preferences/" + web.service.signer.make(Purpose.MANAGE, subscriber_id)).status_code
        == 400
    )


def test_a_confirmation_older_than_the_unsubscribe_does_not_resubscribe(make_web: Callable[..., Web]) -> None:
    clock = FakeClock(datetime.now(UTC))
    web = make_web(clock=clock)
    email = "leaver@example.org"
    assert web.client.post(confirmation_for(web, email)).status_code == 200
    subscriber = web.store.subscribers.find_subscriber(email)
    # A confirmation link mailed an hour ago (same key and purpose as the service's own).
    old_token = web.service.signer.make(
        Purpose.CONFIRM, subscriber.id, issued=datetime.now(UTC) - timedelta(hours=1)
    )
    assert web.service.signer.read(Purpose.CONFIRM, old_token) == subscriber.id
    web.store.subscribers.set_status(subscriber.id, SubscriberStatus.UNSUBSCRIBED, reason="one-click")
    page = web.client.post("/confirm/" + old_token)
    assert page.status_code == 400 and "sign up again" in page.text
    assert status_of(web, email) is SubscriberStatus.UNSUBSCRIBED
    # Signing up again mails a fresh link, and that one brings the reader back.
    clock.advance(timedelta(hours=2))  # past the one-mail-an-hour limit
    web.subscribe(email)
    web.sink.wait_for(to=email, count=2, timeout=5)  # the queue's worker mails it
    mails = sorted(
        (m for m in web.sink.messages(to=email) if "/confirm/" in (m.text or "")), key=lambda m: m.received_at
    )
    assert len(mails) == 2
    assert web.client.post(link_path(mails[-1].as_email(), "/confirm/")).status_code == 200
    assert status_of(web, email) is SubscriberStatus.ACTIVE
