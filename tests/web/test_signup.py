"""Signup box, double opt-in mail, no enumeration, one confirmation per hour."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.models import SubscriberStatus
from tests.factories import FakeClock

from .helpers import Web, link_path, unsubscribe_path


def test_front_page_shows_the_signup_box_with_topics(web: Web) -> None:
    page = web.client.get("/")
    assert page.status_code == 200
    assert "Get Video Surveillance News In Your Inbox" in page.text
    assert 'name="email"' in page.text and ">Subscribe</button>" in page.text
    for topic in web.store.reports.all_topics():
        assert f'value="{topic}"' in page.text
    assert 'name="website"' in page.text  # the honeypot


def test_embed_serves_the_box_alone_and_may_be_framed(web: Web) -> None:
    page = web.client.get("/embed")
    assert page.status_code == 200
    assert "Get Video Surveillance News In Your Inbox" in page.text
    assert "masthead" not in page.text and 'target="_top"' in page.text
    assert "x-frame-options" not in page.headers
    assert "frame-ancestors" not in page.headers["content-security-policy"]


def test_signup_creates_a_pending_subscriber_and_mails_a_confirmation(web: Web) -> None:
    topic = web.store.reports.all_topics()[0]
    page = web.subscribe("New.Reader@Example.org", topics=[topic])
    assert page.status_code == 200 and "Check your inbox" in page.text
    mail = web.one_mail("new.reader@example.org")  # the queue's worker adds the reader, then mails
    subscriber = web.store.subscribers.find_subscriber("new.reader@example.org")
    assert subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    assert subscriber.topics == (topic,)
    assert mail["Subject"].startswith("Confirm your subscription")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe_path(mail).startswith("/unsubscribe/")
    assert link_path(mail, "/confirm/")
    assert mail["Message-ID"] and mail["Date"] and mail["List-Id"]
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and "/confirm/" in html.get_content() and "style=" in html.get_content()


def test_confirmation_mail_envelope_sender_is_the_from_address(web: Web) -> None:
    web.subscribe("envelope@example.org")
    stored = web.sink.wait_for(to="envelope@example.org", timeout=5)[0]
    assert list(stored.rcpt_tos) == ["envelope@example.org"]
    assert stored.mail_from == web.service.settings.mail.from_address
    # The sink's own checks (CRLF, line lengths, Message-ID, Date, unsubscribe headers...) all pass.
    assert [(c.name, c.reason) for c in stored.checks if c.status == "fail"] == []


@pytest.mark.parametrize(
    "status",
    [
        None,
        SubscriberStatus.PENDING,
        SubscriberStatus.ACTIVE,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
    ],
)
def test_the_answer_is_the_same_for_every_address_state(web: Web, status: SubscriberStatus | None) -> None:
    reference = web.subscribe("reference@example.org")
    email = f"state-{status.value if status else 'new'}@example.org"
    if status is not None:
        web.add(email, status)
    page = web.subscribe(email)
    assert (page.status_code, page.text) == (reference.status_code, reference.text)
    assert {k: v for k, v in page.headers.items() if k != "content-length"} == {
        k: v for k, v in reference.headers.items() if k != "content-length"
    }


def test_bounced_addresses_get_no_mail_and_active_ones_get_a_management_link(web: Web) -> None:
    web.add("bounced@example.org", SubscriberStatus.BOUNCED)
    web.add("active@example.org", SubscriberStatus.ACTIVE)
    web.subscribe("bounced@example.org")
    web.subscribe("active@example.org")
    mail = web.one_mail("active@example.org")
    assert link_path(mail, "/manage/")
    assert web.mails("bounced@example.org") == []
    assert web.store.subscribers.find_subscriber("bounced@example.org").status is SubscriberStatus.BOUNCED


def test_repeated_signups_send_one_confirmation_per_hour(make_web: Callable[..., Web]) -> None:
    clock = FakeClock(datetime.now(UTC))
    web = make_web(clock=clock)
    for _ in range(3):
        assert web.subscribe("eager@example.org").status_code == 200
    web.one_mail("eager@example.org")
    assert len(web.mails("eager@example.org")) == 1
    subscriber = web.store.subscribers.find_subscriber("eager@example.org")
    assert (
        subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    )  # one reader, three signups
    # An hour later a new signup may send again.
    clock.advance(timedelta(minutes=61))
    web.subscribe("eager@example.org")
    assert len(web.sink.wait_for(to="eager@example.org", count=2, timeout=5)) == 2


def test_unsubscribed_reader_can_sign_up_again_through_confirmation(web: Web) -> None:
    web.add("returning@example.org", SubscriberStatus.UNSUBSCRIBED)
    web.subscribe("returning@example.org")
    mail = web.one_mail("returning@example.org")
    assert (
        web.store.subscribers.find_subscriber("returning@example.org").status is SubscriberStatus.UNSUBSCRIBED
    )
    assert web.client.post(link_path(mail, "/confirm/")).status_code == 200
    assert web.store.subscribers.find_subscriber("returning@example.org").status is SubscriberStatus.ACTIVE


def test_invalid_address_shows_the_form_again_with_the_reason(web: Web) -> None:
    page = web.subscribe("not-an-address")
    assert page.status_code == 400
    assert 'role="alert"' in page.text and 'value="not-an-address"' in page.text
    assert web.store.subscribers.find_subscriber("not-an-address") is None


def test_honeypot_filled_is_answered_as_usual_and_dropped(web: Web) -> None:
    reference = web.subscribe("person@example.org")
    page = web.subscribe("robot@example.org", website="http://spam.example")
    assert (page.status_code, page.text) == (reference.status_code, reference.text)
    assert web.store.subscribers.find_subscriber("robot@example.org") is None
    web.one_mail("person@example.org")  # the person's mail arrived, so the robot's would have too
    assert web.mails("robot@example.org") == []


def test_a_confirmation_the_server_refused_may_be_asked_for_again_at_once(web: Web) -> None:
    from newsletter.sink.faults import parse_fault_spec

    web.sink.faults.add(parse_fault_spec("rcpt:451 4.3.0 Try again later:to=unlucky@example.org:times=1"))
    assert web.subscribe("unlucky@example.org").status_code == 200
    assert web.mails("unlucky@example.org") == []
    # The failed send released its hourly slot: the reader's retry is not held back.
    assert web.subscribe("unlucky@example.org").status_code == 200
    web.one_mail("unlucky@example.org")
