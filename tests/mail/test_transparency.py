"""SMTP transparency on every wire line: per-recipient links arrive intact in every mail type.

Quoted-printable wraps a long spliced link over several lines; any of them may start with
"." and must be doubled on the wire (RFC 5321 4.5.2), or the receiving server drops the
dot and the link no longer verifies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from newsletter.delivery.message import PreparedMessage
from newsletter.models import Cadence, SubscriberStatus
from newsletter.storage.schema import subscribers as subscribers_table
from newsletter.tokens import Purpose, TokenSigner
from tests.factories import SECRET_KEY, Item, build_settings, utc, write_rss
from tests.mail.helpers import (
    MAIL_TYPES,
    body_links,
    deliver,
    header_unsubscribe,
    mail_bytes,
    signed_links,
    subscriber,
)

# 54 characters: with it, every subscriber id from 100,000 to 999,999 lost a dot on the wire.
BASE_URL_54 = "https://newsletter.video-surveillance-news.example.com"
assert len(BASE_URL_54) == 54


def insert_subscriber(store: Any, subscriber_id: int, email: str) -> None:
    """An active subscriber with a chosen (six-digit) id: set-up, like tests.factories.bulk_subscribers."""
    now = store.clock()
    row = {
        "id": subscriber_id,
        "email": email,
        "name": "Reader",
        "status": SubscriberStatus.ACTIVE.value,
        "topics": [],
        "cadence": Cadence.DAILY.value,
        "paused": False,
        "created_at": now,
        "confirmed_at": now,
        "updated_at": now,
        "status_reason": "",
    }
    with store.engine.begin() as conn:
        conn.execute(subscribers_table.insert(), [row])


def test_body_links_keep_their_dots_with_a_54_character_base_url_and_six_digit_ids(
    make_service, sink, tmp_path: Path
) -> None:
    """Regression: base_url of 54 characters, subscriber ids 100000..:
    the body links lost a dot on the wire."""
    feed = write_rss(
        tmp_path / "feed.xml", [Item("Axis launches a new camera line", "axis", utc(2026, 11, 20, 9))]
    )
    service = make_service(NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_SITE_BASE_URL=BASE_URL_54)
    ids = (100000, 100001, 123456, 999999)
    for subscriber_id in ids:
        insert_subscriber(service.store, subscriber_id, f"r{subscriber_id}@example.org")
    service.runner.run(key="dots", as_of=utc(2026, 11, 22))
    sink.flush()
    for subscriber_id in ids:
        (message,) = sink.messages(to=f"r{subscriber_id}@example.org")
        links = signed_links(service.settings, service.signer, subscriber_id)
        text_urls, hrefs = body_links(message.raw)
        assert header_unsubscribe(message.raw) == links["unsubscribe"]
        for link in links.values():
            assert link in text_urls and link in hrefs, (
                f"subscriber {subscriber_id}: {link} did not arrive intact"
            )
        assert {c.name: c.status for c in message.checks}["body-links"] == "pass"


def test_every_wire_line_starting_with_a_dot_is_stuffed_exactly_once(tmp_path: Path) -> None:
    """Regression: only the first line of a spliced value was checked for a leading dot."""
    settings = build_settings(tmp_path, NEWSLETTER_SITE_BASE_URL=BASE_URL_54)
    signer = TokenSigner(SECRET_KEY)
    links = signed_links(settings, signer, 100000)
    prepared = PreparedMessage(
        from_name="N",
        from_address="n@example.com",
        subject="S",
        text="Unsubscribe: %%UNSUBSCRIBE_URL%%\n",
        html='<a href="%%PREFERENCES_URL%%">p</a>\n',
        list_id="L <l.example.com>",
    )
    values = {
        "to_address": "r@example.org",
        "to_name": "",
        "message_id": "<m@example.com>",
        "date": "Thu, 26 Nov 2026 12:00:00 +0000",
        "unsubscribe_url": links["unsubscribe"],
        "preferences_url": links["preferences"],
    }
    plain = prepared.for_recipient(**values)
    wire = prepared.for_recipient(**values, dot_stuffed=True)
    dotted = [line for line in plain.split(b"\r\n") if line.startswith(b".")]
    assert dotted, "the case must have a wrapped line that starts with a dot"
    assert wire.split(b"\r\n") == [
        b"." + line if line.startswith(b".") else line for line in plain.split(b"\r\n")
    ]


BASE_URLS = st.builds(
    lambda host, path: f"https://{host}.example.com{path}",
    st.text("abcdefghij-.", min_size=1, max_size=50).map(
        lambda h: "a" + h.strip(".-").replace("..", ".").replace(".-", ".a") + "z"
    ),
    st.sampled_from(["", "/news", "/a.b/c.d", "/" + "x." * 12]),
)
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)
TITLES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=120
).filter(lambda t: t.strip())


# MAIL_PROPERTY_EXAMPLES=500 for a long run; 25 in make test.
@hyp_settings(
    max_examples=int(os.environ.get("MAIL_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(MAIL_TYPES),
    base_url=BASE_URLS,
    subscriber_id=st.integers(1, 10**9),
    name=NAMES,
    title=TITLES,
)
def test_decoded_bodies_carry_exactly_the_signed_links_for_every_mail_type(
    make_service, sink, tmp_path: Path, kind: str, base_url: str, subscriber_id: int, name: str, title: str
) -> None:
    """Property: whatever the base_url length, id, name and title, the links arrive as signed."""
    service = make_service(NEWSLETTER_SITE_BASE_URL=base_url)
    signer = service.signer
    who = subscriber(subscriber_id, name=name)
    data, stuffed = mail_bytes(kind, service.settings, signer, service.store.subscribers, who, title)
    message = deliver(service.settings, sink, data, who.email, dot_stuffed=stuffed)
    text_urls, hrefs = body_links(message.raw)
    unsubscribe = header_unsubscribe(message.raw)
    assert signer.read(Purpose.UNSUBSCRIBE, unsubscribe.rsplit("/", 1)[1]) == subscriber_id
    base = service.settings.site.base_url.rstrip("/")
    ours = {u for u in text_urls + hrefs if u.startswith(base + "/") and "/archive" not in u} - {
        base + "/"
    }  # minus the masthead's home link
    expected = {unsubscribe}
    if kind == "digest":
        expected.add(signed_links(service.settings, signer, subscriber_id)["preferences"])
    else:
        (action,) = ours - {unsubscribe}
        purpose = Purpose.CONFIRM if kind == "confirm" else Purpose.MANAGE
        assert signer.read(purpose, action.rsplit("/", 1)[1]) == subscriber_id
        expected.add(action)
    assert ours == expected
    assert unsubscribe in text_urls and unsubscribe in hrefs
    assert {c.name: c.status for c in message.checks}["body-links"] == "pass"
