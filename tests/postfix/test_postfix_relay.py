"""The service behind a real Postfix 3.7 relay on loopback: asynchronous bounces with Postfix's own
DSNs, rejections at RCPT and DATA, delayed and expired mail, anvil throttling and strict smtpd
options. Each case says who is suppressed, who is not, and that every reader got exactly one copy.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from newsletter.sink.faults import FaultRule
from newsletter.storage.schema import bounce_events
from newsletter.subscriptions import add_subscriber
from tests.delivery.helpers import bounce_count, flat, subscriber_status
from tests.servers import free_port


def kinds(world, email: str) -> list[str]:
    sid = world.store.subscribers.find_subscriber(email).id
    with world.store.engine.connect() as conn:
        return [
            r.kind
            for r in conn.execute(
                sa.select(bounce_events.c.kind)
                .where(bounce_events.c.subscriber_id == sid)
                .order_by(bounce_events.c.id)
            )
        ]


def test_postfix_dsns_suppress_unknown_users_only_and_every_reader_gets_one_copy(world, relay):
    readers = world.add_subscribers(6, prefix="reader")
    gone, nouser, spam, full, filtered, stranger = (
        f"{name}@example.org" for name in ("gone", "nouser", "spam", "full", "filtered", "stranger")
    )
    for email in (gone, nouser, spam, full, filtered, stranger):
        add_subscriber(world.store, email)
    everyone = [*readers, gone, nouser, spam, full, filtered, stranger]
    known = [e for e in everyone if e != stranger]
    relay.configure(
        {
            # Unknown at the relay itself: refused at RCPT, synchronously.
            "relay_recipient_maps": "inline:{" + ", ".join(f"{{{e}=ok}}" for e in known) + "}",
            # A content filter at the relay: refused at the end of DATA, synchronously.
            "header_checks": "regexp:" + str(relay.postfix.config_dir / "header_checks"),
        },
        # A transport error: smtpd consults it at RCPT and refuses there.
        routes={nouser: "error:5.1.1 User unknown in virtual mailbox table"},
        files={"header_checks": "/^To:.*filtered@example\\.org/ REJECT 5.7.1 Message content rejected\n"},
    )
    # The next hop refuses some, after Postfix has accepted: asynchronous DSNs.
    world.sink.faults.add(
        FaultRule(
            stage="rcpt",
            code=550,
            text="5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
            to=gone,
        )
    )
    world.sink.faults.add(
        FaultRule(stage="data", code=554, text="5.7.1 Message rejected as spam by content filter", to=spam)
    )
    world.sink.faults.add(FaultRule(stage="rcpt", code=552, text="5.2.2 Mailbox full", to=full))

    world.run("e1")
    # Postfix's own DSNs for gone, spam and full come back to the VERP address.
    relay.settle(lambda: len(relay.received()) >= 3)

    suppressed = {e for e in everyone if subscriber_status(world.store, e) == "bounced"}
    assert suppressed == {gone, nouser, stranger}
    assert (
        kinds(world, gone) == ["hard"]
        and kinds(world, nouser) == ["hard"]
        and kinds(world, stranger) == ["hard"]
    )
    assert kinds(world, spam) == ["blocked"] and kinds(world, filtered) == ["blocked"]
    assert kinds(world, full) == ["soft"]
    for email in readers:
        assert relay.copies(email) == 1, email
        assert kinds(world, email) == []
    for email in (gone, nouser, spam, full, filtered, stranger):
        assert relay.copies(email) == 0, email
    dsns = relay.received()
    assert len(dsns) == 3
    assert all(
        b"Auto-Submitted: auto-replied" in raw and b"report-type=delivery-status" in raw for raw in dsns
    ), "Postfix DSNs, recognised as DSNs"
    checked = world.check("e1", final=False, expected=everyone)
    assert checked.duplicates == 0
    # Accepted by Postfix: sent; refused by Postfix at RCPT or DATA: failed.
    assert checked.states() == {"sent": 9, "failed": 3}


def test_postfix_delayed_and_expired_mail_counts_one_soft_bounce(world, relay):
    readers = world.add_subscribers(3, prefix="reader")
    [slow] = world.add_subscribers(1, prefix="slow", domain="slow.example")
    relay.configure(
        {"maximal_queue_lifetime": "8s", "bounce_queue_lifetime": "8s", "delay_warning_time": "2s"},
        routes={"slow.example": f"smtp:[127.0.0.1]:{free_port()}"},  # nothing listens: deferred, then expired
    )
    world.run("e1")
    relay.settle(lambda: any(b"Action: failed" in raw for raw in relay.received()), timeout=90)
    received = relay.received()
    assert any(b"Action: delayed" in raw for raw in received), "a delay warning came first"
    assert kinds(world, slow) == ["soft"], "the expiry counts once; the delay warning not at all"
    assert subscriber_status(world.store, slow) == "active"
    assert all(relay.copies(e) == 1 and kinds(world, e) == [] for e in readers)
    assert relay.copies(slow) == 0


def test_postfix_connection_limit_defers_nobody_and_every_reader_gets_one_copy(world, relay):
    world.configure(smtp_connections=4, smtp_retries=2)
    readers = world.add_subscribers(40, prefix="reader")
    relay.configure({"smtpd_client_connection_count_limit": "2", "smtpd_client_event_limit_exceptions": ""})
    result = world.run("e1")
    relay.settle(lambda: len(world.sink.messages()) >= 40)
    assert result.edition.status.value == "sent", result.message
    checked = world.check("e1", expected=readers)
    assert checked.states() == {"sent": 40}
    assert all(relay.copies(e) == 1 for e in readers)
    assert bounce_count(world.store) == 0
    log = relay.postfix.log()
    refused = len(re.findall(r"Connection concurrency limit exceeded", log))
    assert refused, "the limit was hit (else this test proves nothing)"
    assert refused <= 20, f"{refused} connects refused by anvil: the pool should shrink, not hammer"
    print(f"anvil: {refused} refused connects for 40 readers over 4 configured connections, limit 2")


def test_postfix_strict_helo_pauses_and_blames_nobody_then_helo_name_delivers_once(world, relay):
    world.configure(smtp_helo_name="localhost", smtp_retries=1)
    readers = world.add_subscribers(8, prefix="reader")
    relay.configure(
        {"smtpd_forbid_bare_newline": "yes"},
        smtpd={
            "smtpd_helo_required": "yes",
            "smtpd_helo_restrictions": "reject_invalid_helo_hostname,reject_non_fqdn_helo_hostname",
            "smtpd_data_restrictions": "reject_unauth_pipelining",
        },
    )
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 1, out.output
    assert "smtp.helo_name" in flat(out.output)
    edition = world.edition("e1")
    assert edition.status.value == "paused"
    assert world.check("e1", final=False, expected=readers).states() == {"pending": 8}
    assert bounce_count(world.store) == 0 and all(
        subscriber_status(world.store, e) == "active" for e in readers
    )

    world.configure(smtp_helo_name="news.example.com")
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    relay.settle(lambda: len(world.sink.messages()) >= 8)
    checked = world.check("e1", expected=readers)
    assert checked.states() == {"sent": 8} and checked.duplicates == 0
    assert all(relay.copies(e) == 1 for e in readers)
    received = [str(m.headers.get_all("Received")) for m in world.sink.messages()]
    assert all("from news.example.com" in r for r in received), received[:1]
    assert (
        "bare <LF>" not in relay.postfix.log()
        and "Improper use of SMTP command pipelining" not in relay.postfix.log()
    )


def test_postfix_global_dsn_for_smtputf8_mail_suppresses_the_unknown_reader(world, relay):
    readers = world.add_subscribers(2, prefix="reader")
    unknown = "jörg@example.org"
    add_subscriber(world.store, unknown)
    relay.configure()
    world.sink.faults.add(FaultRule(stage="rcpt", code=550, text="5.1.1 User unknown", to=unknown))
    world.run("e1")
    relay.settle(lambda: len(relay.received()) >= 1)
    [dsn] = relay.received()
    assert b"global-delivery-status" in dsn and b"Auto-Submitted: auto-replied" in dsn, dsn[:600]
    assert subscriber_status(world.store, unknown) == "bounced"
    assert kinds(world, unknown) == ["hard"]
    assert all(relay.copies(e) == 1 and subscriber_status(world.store, e) == "active" for e in readers)
