"""A test send's links: the reader's pages answer them, and nothing about the reader changes.

Regression: the test send's List-Unsubscribe pointed at a link whose RFC 8058 one-click POST
answered 400. Test tokens (``Purpose.TEST``) answer 200 on every method and change nothing,
and no other purpose reads them (nor they another's token).
"""

from __future__ import annotations

import pytest

from newsletter.models import Cadence, SubscriberStatus
from newsletter.tokens import Purpose

from .helpers import Web

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def reader(web: Web) -> int:
    subscriber, _ = web.store.subscribers.add_subscriber(email="reader@example.org", topics=["Cameras"])
    return subscriber.id


def test_one_click_on_a_test_link_answers_200_and_the_reader_stays_subscribed(web: Web, reader: int) -> None:
    token = web.service.signer.make(Purpose.TEST, reader)
    page = web.client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and "test" in page.text.lower() and "changes nothing" in page.text
    assert "reader@example.org" not in page.text  # a forwarded test shows nobody's address
    done = web.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert done.status_code == 200 and "changes nothing" in done.text
    assert web.client.post(f"/unsubscribe/{token}").status_code == 200  # the page's own button too
    subscriber = web.store.subscribers.get_subscriber(reader)
    assert subscriber is not None and subscriber.status is SubscriberStatus.ACTIVE


def test_preferences_posted_through_a_test_link_change_nothing(web: Web, reader: int) -> None:
    token = web.service.signer.make(Purpose.TEST, reader)
    assert "test" in web.client.get(f"/preferences/{token}").text.lower()
    posted = web.client.post(f"/preferences/{token}", data={"topics": [], "cadence": "weekly", "paused": "1"})
    assert posted.status_code == 200 and "changes nothing" in posted.text
    subscriber = web.store.subscribers.get_subscriber(reader)
    assert subscriber is not None
    assert subscriber.cadence is Cadence.DAILY and not subscriber.paused and subscriber.topics == ("Cameras",)


def test_a_test_token_is_no_other_purposes_token_and_no_other_token_is_a_test(web: Web, reader: int) -> None:
    signer = web.service.signer
    test = signer.make(Purpose.TEST, reader)
    assert web.client.get(f"/manage/{test}").status_code == 400
    assert web.client.post(f"/confirm/{test}").status_code == 400
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.BOUNCE):
        assert not signer.is_test(signer.make(purpose, reader))
    assert not signer.is_test(test[:-2] + ("AA" if not test.endswith("AA") else "BB"))
