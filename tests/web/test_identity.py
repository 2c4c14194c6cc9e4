"""Links belong to their owner, and the list remembers who left.

Regression tests for the audit: a removed reader's links acted on the next signup (SQLite
gave the deleted highest id out again); `subscribers remove` then an import made an
unsubscribed person active again; confirm-after-unsubscribe compared whole seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from itsdangerous import URLSafeSerializer

from newsletter.cli import main
from newsletter.models import SubscriberStatus
from newsletter.storage.migrations import upgrade
from newsletter.storage.schema import subscribers, suppressions
from newsletter.storage.store import Store, _sqlite_pragmas
from newsletter.tokens import Purpose
from tests.factories import SECRET_KEY, service_env

from .helpers import BASE_URL, Web, link_path

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def status_of(web: Web, email: str) -> SubscriberStatus | None:
    subscriber = web.store.subscribers.find_subscriber(email)
    return subscriber.status if subscriber else None


def cli(tmp_path: Path, web: Web, *args: str) -> Any:
    """The operator CLI on the web app's database (same env as the app's settings)."""
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    env = {
        **service_env(tmp_path, smtp_port=web.sink.port, NEWSLETTER_SITE_BASE_URL=BASE_URL),
        "NEWSLETTER_CONFIG": str(config),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def links(web: Web, subscriber_id: int) -> dict[Purpose, str]:
    prefixes = {
        Purpose.CONFIRM: "/confirm/",
        Purpose.UNSUBSCRIBE: "/unsubscribe/",
        Purpose.PREFERENCES: "/preferences/",
        Purpose.MANAGE: "/manage/",
    }
    return {
        purpose: prefix + web.service.signer.make(purpose, subscriber_id)
        for purpose, prefix in prefixes.items()
    }


# -- identities ---------------------------------------------------------------------------


def test_subscriber_ids_are_never_given_out_again_after_the_highest_is_removed(web: Web) -> None:
    first = web.add("first@example.org")
    web.store.subscribers.remove_subscriber("first@example.org")
    second = web.add("second@example.org")
    assert second > first
    with web.store.engine.connect() as conn:
        ddl = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")).scalar()
    assert "AUTOINCREMENT" in ddl  # a later migration that rebuilds the table must keep it


def test_a_removed_readers_old_links_do_nothing_to_the_next_signup(web: Web) -> None:
    old_id = web.add("removed@example.org", SubscriberStatus.PENDING)
    old = links(web, old_id)
    web.store.subscribers.remove_subscriber("removed@example.org")
    web.subscribe("next@example.org")
    web.one_mail("next@example.org")
    newcomer = web.store.subscribers.find_subscriber("next@example.org")
    assert newcomer is not None and newcomer.status is SubscriberStatus.PENDING
    # The removed reader's confirmation does not confirm the newcomer...
    assert web.client.post(old[Purpose.CONFIRM]).status_code == 400
    assert status_of(web, "next@example.org") is SubscriberStatus.PENDING
    # ...their preferences and manage links neither show nor change the newcomer's preferences...
    for purpose in (Purpose.PREFERENCES, Purpose.MANAGE):
        page = web.client.get(old[purpose])
        assert page.status_code == 400 and "next@example.org" not in page.text
        assert web.client.post(old[purpose], data={"cadence": "weekly", "paused": "1"}).status_code == 400
    fresh = web.store.subscribers.find_subscriber("next@example.org")
    assert fresh is not None and fresh.cadence.value == "daily" and not fresh.paused
    # ...and their one-click unsubscribe answers as always but changes nobody.
    assert web.client.post(old[Purpose.UNSUBSCRIBE], data=ONE_CLICK).status_code == 200
    assert status_of(web, "next@example.org") is SubscriberStatus.PENDING


def test_links_mailed_before_the_migration_keep_working_for_their_readers_only(tmp_path: Path) -> None:
    """A database from before migration 0006: its readers' id-only links still work; a later
    reader who is given a deleted reader's id is not reachable through that reader's old links."""
    url = f"sqlite:///{tmp_path}/old.sqlite"
    engine = sa.create_engine(url)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine, "0005")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:  # the rows the old release wrote: no public method writes a 0005 database
        for subscriber_id, email in ((1, "kept@example.org"), (2, "deleted@example.org")):
            conn.execute(
                sa.text(
                    "INSERT INTO subscribers (id, email, name, status, topics, cadence, paused, created_at,"
                    " updated_at, status_reason) "
                    "VALUES (:id, :email, '', 'active', '[]', 'daily', 0, :now, :now, '')"
                ),
                {"id": subscriber_id, "email": email, "now": now},
            )
        conn.execute(sa.text("DELETE FROM subscribers WHERE id = 2"))  # removed before the upgrade
    engine.dispose()
    legacy = URLSafeSerializer(
        SECRET_KEY, salt="newsletter.unsubscribe"
    )  # the old release's unsubscribe links
    store = Store(url, create=False)
    try:
        upgrade(store.engine)
        later, _ = store.subscribers.add_subscriber(email="later@example.org")
        assert later.id == 2  # the id was given out before the upgrade could remember it...
        from newsletter.tokens import TokenSigner

        signer = TokenSigner(SECRET_KEY)
        kept = signer.read_link(Purpose.UNSUBSCRIBE, legacy.dumps(1))
        stale = signer.read_link(Purpose.UNSUBSCRIBE, legacy.dumps(2))
        assert kept.legacy and store.subscribers.honours_legacy_links(kept.subscriber_id)
        assert stale.legacy and not store.subscribers.honours_legacy_links(
            stale.subscriber_id
        )  # ...but not its old links
        assert not signer.read_link(Purpose.UNSUBSCRIBE, signer.make(Purpose.UNSUBSCRIBE, 2)).legacy
    finally:
        store.dispose()


def test_a_confirmation_made_in_the_same_second_but_before_the_unsubscribe_does_not_resubscribe(
    web: Web,
) -> None:
    subscriber_id = web.add("split@example.org")
    left_at = web.store.subscribers.get_subscriber(subscriber_id).updated_at
    # Made 300 ms before the reader left, in the same whole second (the old check truncated to seconds).
    left_at = left_at.replace(microsecond=600_000)
    web.store.subscribers.set_status(
        subscriber_id, SubscriberStatus.UNSUBSCRIBED, reason="one-click", now=left_at
    )
    token = web.service.signer.make(
        Purpose.CONFIRM, subscriber_id, issued=left_at - timedelta(milliseconds=300)
    )
    page = web.client.post("/confirm/" + token)
    assert page.status_code == 400 and "older than your unsubscribe" in page.text
    assert status_of(web, "split@example.org") is SubscriberStatus.UNSUBSCRIBED
    after = web.service.signer.make(
        Purpose.CONFIRM, subscriber_id, issued=left_at + timedelta(milliseconds=1)
    )
    assert web.client.post("/confirm/" + after).status_code == 200


# -- the suppression list -------------------------------------------------------------------


def test_remove_then_import_does_not_reactivate_an_unsubscribed_person(tmp_path: Path, web: Web) -> None:
    subscriber_id = web.add("left@example.org")
    web.client.post(
        "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id), data=ONE_CLICK
    )
    assert cli(tmp_path, web, "subscribers", "remove", "left@example.org").exit_code == 0
    assert status_of(web, "left@example.org") is None
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,name\nleft@example.org,Left\nfresh@example.org,Fresh\n", encoding="utf-8")
    assert cli(tmp_path, web, "subscribers", "import", str(csv_file)).exit_code == 0
    assert status_of(web, "left@example.org") is SubscriberStatus.UNSUBSCRIBED
    assert status_of(web, "fresh@example.org") is SubscriberStatus.ACTIVE
    web.service.runner.run(key="after-import", fetch=False)
    web.sink.wait_for(to="fresh@example.org", timeout=5)
    assert web.mails("left@example.org") == []


def test_add_and_signup_of_a_removed_bounced_or_unsubscribed_address_never_reactivate(
    tmp_path: Path, web: Web
) -> None:
    web.add("bounced@example.org", SubscriberStatus.BOUNCED)
    web.add("gone@gmail.com", SubscriberStatus.UNSUBSCRIBED)
    web.store.subscribers.remove_subscriber("bounced@example.org")
    web.store.subscribers.remove_subscriber("gone@gmail.com")
    added = cli(tmp_path, web, "subscribers", "add", "bounced@example.org")
    assert added.exit_code == 0 and "suppression list" in added.output
    assert status_of(web, "bounced@example.org") is SubscriberStatus.BOUNCED
    # Signup of the same inbox under another spelling: the row is unsubscribed, and only the
    # person's own confirmation (the mail the signup sends) brings them back.
    web.subscribe("Gone+news@gmail.com")
    mail = web.one_mail("gone+news@gmail.com")
    assert status_of(web, "gone+news@gmail.com") is SubscriberStatus.UNSUBSCRIBED
    assert web.client.post(link_path(mail, "/confirm/")).status_code == 200
    assert status_of(web, "gone+news@gmail.com") is SubscriberStatus.ACTIVE
    assert web.store.suppressions.status_of("gone@gmail.com") is None  # confirmed: off the list
    web.subscribe("bounced@example.org")
    web.subscribe("later@example.org")
    web.one_mail("later@example.org")  # the queue is in order: the bounced one was handled first
    assert web.mails("bounced@example.org") == []
    # An operator's reactivate is the other way back.
    assert cli(tmp_path, web, "subscribers", "reactivate", "bounced@example.org").exit_code == 0
    assert status_of(web, "bounced@example.org") is SubscriberStatus.ACTIVE


def test_remove_forget_erases_personal_data_and_keeps_only_a_hash(tmp_path: Path, web: Web) -> None:
    subscriber_id = web.add("private@example.org")
    web.store.subscribers.update_preferences(
        subscriber_id,
        topics=("China",),
        cadence=web.store.subscribers.get_subscriber(subscriber_id).cadence,
        paused=False,
    )
    web.service.runner.run(key="before-forget", fetch=False)
    web.sink.wait_for(to="private@example.org", timeout=5)
    result = cli(tmp_path, web, "subscribers", "remove", "--forget", "private@example.org")
    assert result.exit_code == 0 and "Erased" in result.output
    with web.store.engine.connect() as conn:
        dump = "\n".join(
            str(tuple(row))
            for table in ("subscribers", "deliveries", "bounce_events", "web_mail_queue", "suppressions")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
        )
        entries = conn.execute(sa.select(suppressions)).all()
    assert "private@example.org" not in dump and "private" not in dump
    assert len(entries) == 1 and len(entries[0].mailbox_hash) == 64
    # Forgotten, yet never mailed again: an import brings the address back unsubscribed.
    csv_file = tmp_path / "again.csv"
    csv_file.write_text("email\nprivate@example.org\n", encoding="utf-8")
    cli(tmp_path, web, "subscribers", "import", str(csv_file))
    assert status_of(web, "private@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribing_puts_the_mailbox_on_the_list_in_the_same_transaction(web: Web) -> None:
    subscriber_id = web.add("Some.One+tag@gmail.com".lower())
    web.client.post(
        "/unsubscribe/" + web.service.signer.make(Purpose.UNSUBSCRIBE, subscriber_id), data=ONE_CLICK
    )
    assert web.store.suppressions.status_of("someone@googlemail.com") is SubscriberStatus.UNSUBSCRIBED
    with web.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(subscribers)).scalar_one() == 1
