"""Bad input, rate limits, security headers, and no state change on GET."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from newsletter.models import SubscriberStatus
from newsletter.storage.schema import subscribers
from newsletter.tokens import Purpose
from newsletter.web.ratelimit import Limit, RateLimits

from .helpers import Web

BAD_CHARS = ["\r", "\n", "\x00"]


@pytest.mark.parametrize("char", BAD_CHARS, ids=["CR", "LF", "NUL"])
@pytest.mark.parametrize(
    "field",
    ["email", "topics", "website", "anything"],
)
def test_line_breaks_or_nul_in_any_signup_field_are_400(web: Web, field: str, char: str) -> None:
    data = {"email": "ok@example.org", field: f"a{char}Bcc: x@example.org"}
    page = web.client.post("/subscribe", data=data)
    assert page.status_code == 400
    assert web.store.subscribers.find_subscriber("ok@example.org") is None


@pytest.mark.parametrize("char", BAD_CHARS, ids=["CR", "LF", "NUL"])
def test_line_breaks_or_nul_in_manage_and_preferences_are_400(web: Web, char: str) -> None:
    subscriber_id = web.add("member@example.org", topics=("China",))
    assert web.client.post("/manage", data={"email": f"member@example.org{char}"}).status_code == 400
    path = "/preferences/" + web.service.signer.make(Purpose.PREFERENCES, subscriber_id)
    assert web.client.post(path, data={"cadence": f"weekly{char}"}).status_code == 400
    assert web.store.subscribers.get_subscriber(subscriber_id).cadence.value == "daily"
    unsubscribe = "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id)
    assert web.client.post(unsubscribe, data={"List-Unsubscribe": f"One-Click{char}"}).status_code == 400
    assert web.store.subscribers.get_subscriber(subscriber_id).status.value == "active"


def test_length_limits(web: Web) -> None:
    long_address = "a" * 300 + "@example.org"
    assert web.client.post("/subscribe", data={"email": long_address}).status_code == 400
    assert web.client.post("/manage", data={"email": long_address}).status_code == 400
    assert (
        web.client.post("/subscribe", data={"email": "ok@example.org", "website": "x" * 201}).status_code
        == 400
    )
    huge = web.client.post(
        "/subscribe",
        content=b"email=" + b"a" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    assert web.client.post("/subscribe", files={"email": ("f.txt", b"ok@example.org")}).status_code == 400
    assert web.mails("ok@example.org") == []


def test_invalid_address_on_manage_is_400_without_mail(web: Web) -> None:
    page = web.client.post("/manage", data={"email": "nobody at example"})
    assert page.status_code == 400 and 'role="alert"' in page.text


def test_per_client_rate_limit_answers_429_with_a_page(make_web: Callable[..., Web]) -> None:
    web = make_web(limits=RateLimits(per_client=Limit(2, 600), per_target=Limit(100, 3600)))
    assert web.subscribe("one@example.org").status_code == 200
    assert web.client.post("/manage", data={"email": "two@example.org"}).status_code == 200
    page = web.subscribe("three@example.org")
    assert (
        page.status_code == 429 and "Too many requests" in page.text and int(page.headers["retry-after"]) > 0
    )
    assert web.store.subscribers.find_subscriber("three@example.org") is None
    # Another client is not held back by the first one's requests.
    other = make_web(
        service=web.service,
        limits=RateLimits(per_client=Limit(2, 600), per_target=Limit(100, 3600)),
        client=("203.0.113.9", 1),
    )
    assert other.subscribe("three@example.org").status_code == 200


def test_per_target_rate_limit_spans_clients(make_web: Callable[..., Web]) -> None:
    limits = RateLimits(per_client=Limit(100, 600), per_target=Limit(2, 3600))
    first = make_web(limits=limits)
    assert first.subscribe("target@example.org").status_code == 200
    assert first.client.post("/manage", data={"email": "target@example.org"}).status_code == 200
    assert first.subscribe("target@example.org").status_code == 429
    assert first.subscribe("someone-else@example.org").status_code == 200
    # Many clients cannot flood one inbox either: the count is per address, in one app.
    second = first.client.__class__(first.app, client=("203.0.113.50", 2))
    with second:
        assert second.post("/manage", data={"email": "target@example.org"}).status_code == 429


PAGES = ["/", "/manage", "/archive", "/static/site.css", "/confirm/bad", "/no-such-page", "/archive/424242"]


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_every_page(web: Web, path: str) -> None:
    page = web.client.get(path)
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_security_headers_on_posts_and_errors_too(web: Web) -> None:
    for page in (web.subscribe("x@example.org"), web.subscribe("bad\naddress"), web.client.get("/subscribe")):
        assert (
            page.headers["x-frame-options"] == "DENY"
            and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        )
    assert web.client.get("/subscribe").status_code == 405


def test_no_route_changes_state_on_get(web: Web) -> None:

    ids = [web.add("a@example.org"), web.add("p@example.org", SubscriberStatus.PENDING)]
    web.service.runner.run(key="get-sweep", fetch=False)

    def snapshot() -> list[tuple[object, ...]]:
        with web.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(subscribers).order_by(subscribers.c.id))]

    before = snapshot()
    paths = ["/", "/embed", "/manage", "/archive", "/archive/1", "/subscribe"]
    for subscriber_id in ids:
        for purpose, prefix in (
            (Purpose.CONFIRM, "/confirm/"),
            (Purpose.UNSUBSCRIBE, "/unsubscribe/"),
            (Purpose.PREFERENCES, "/preferences/"),
            (Purpose.MANAGE, "/manage/"),
        ):
            paths.append(prefix + web.service.signer.make(purpose, subscriber_id))
    for path in paths:
        web.client.get(path)
        web.client.head(path)
    assert snapshot() == before
    assert web.mails("a@example.org") and not web.mails(
        "p@example.org"
    )  # only the digest; GETs mailed nothing
