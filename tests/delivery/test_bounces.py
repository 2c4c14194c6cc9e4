"""Bounces that come later: RFC 3464 DSNs to the VERP envelope sender, the receiver's
audit Maildir, and `newsletter bounces --from-maildir`."""

from __future__ import annotations

import mailbox
import smtplib
from pathlib import Path

import sqlalchemy as sa

from newsletter.delivery.bounces import BounceProcessor, BounceReceiver
from newsletter.storage.schema import bounce_events
from tests.delivery.helpers import flat, subscriber_status


def dsn(*, recipient: str, message_id: str, action: str, status: str, diagnostic: str = "") -> bytes:
    """A multipart/report DSN as an MTA writes it (RFC 3464), CRLF line ends."""
    boundary = "dsn-boundary-42"
    lines = [
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>",
        "To: <bounces@example.com>",
        "Subject: Delivery Status Notification",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Delivery to {recipient}: {action}.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.net",
        "Arrival-Date: Thu, 1 Jan 2026 10:00:00 +0000",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        *([f"Diagnostic-Code: smtp; {diagnostic}"] if diagnostic else []),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        "From: Video Surveillance News <news@example.com>",
        f"To: {recipient}",
        f"Message-ID: {message_id}",
        "Subject: Your digest",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()


def auto_reply(recipient: str) -> bytes:
    return "\r\n".join(
        [
            f"From: {recipient}",
            "To: <bounces@example.com>",
            "Subject: Out of office",
            "Auto-Submitted: auto-replied",
            "",
            "I am away until Monday.",
            "",
        ]
    ).encode()


def envelope_of(world, email: str) -> tuple[str, str]:
    """(VERP envelope sender, Message-ID) of the digest the sink received for ``email``."""
    [message] = [m for m in world.sink.messages() if m.rcpt_tos == (email,)]
    return message.mail_from, str(message.headers["Message-ID"])


def bounce_sources(world, email: str) -> list[str]:
    sid = world.store.subscribers.find_subscriber(email).id
    with world.store.engine.connect() as conn:
        return [r.source for r in conn.execute(sa.select(bounce_events.c.source).where(bounce_events.c.subscriber_id == sid))]


def processor(world) -> BounceProcessor:
    service = world.service
    return BounceProcessor(service.store.outbox, service.store.subscribers, service.signer, service.runner.suppressor())


def test_dsn_to_the_verp_address_suppresses_and_delayed_or_auto_replies_do_not(world, tmp_path: Path):
    emails = world.add_subscribers(5)
    world.run("e1")
    world.check("e1", expected=emails)
    failed, delayed, away = emails[0], emails[1], emails[2]
    verp_failed, mid_failed = envelope_of(world, failed)
    verp_delayed, mid_delayed = envelope_of(world, delayed)
    verp_away, _ = envelope_of(world, away)
    assert verp_failed.startswith("bounces+") and verp_failed.endswith("@example.com")

    maildir = tmp_path / "bounces"
    mailbox.Maildir(str(maildir), create=True)  # see test_receiver_creates_its_maildir
    with BounceReceiver(processor(world), maildir=maildir, port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            # Final-Recipient deliberately unhelpful: the VERP address must find the row.
            smtp.sendmail("", [verp_failed], dsn(recipient="forwarded@elsewhere.example", message_id="<unrelated@x>", action="failed", status="5.1.1", diagnostic="550 5.1.1 User unknown"))
            smtp.sendmail("", [verp_delayed], dsn(recipient=delayed, message_id=mid_delayed, action="delayed", status="4.4.7"))
            smtp.sendmail("", [verp_away], auto_reply(away))

    assert subscriber_status(world.store, failed) == "bounced"
    assert bounce_sources(world, failed) == ["dsn"]
    assert subscriber_status(world.store, delayed) == "active" and bounce_sources(world, delayed) == []
    assert subscriber_status(world.store, away) == "active" and bounce_sources(world, away) == []
    box = mailbox.Maildir(str(maildir), create=False)
    assert len(box) == 3, "every message received is kept for audit"
    kept = sorted(box.get_bytes(k) for k in box.keys())
    assert any(verp_failed.encode() in raw and b"Status: 5.1.1" in raw for raw in kept)

    # The next edition leaves the bounced address out.
    world.add_report()
    world.run("e2")
    world.check("e2", expected=[e for e in emails if e != failed])
    assert len([m for m in world.sink.messages() if m.rcpt_tos == (failed,)]) == 1, "only the first edition reached it"

    # Replaying the audit Maildir changes nothing more and says what each message was.
    out = world.cli("bounces", "--from-maildir", str(maildir))
    assert out.exit_code == 0, out.output
    assert "3 messages" in flat(out.output)
    assert subscriber_status(world.store, delayed) == "active"


def test_dsn_found_by_original_message_id_without_verp(world, tmp_path: Path):
    emails = world.add_subscribers(3)
    world.run("e1")
    _, message_id = envelope_of(world, emails[1])
    mailbox.Maildir(str(tmp_path / "b"), create=True)
    with BounceReceiver(processor(world), maildir=tmp_path / "b", port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            smtp.sendmail("", ["postmaster@example.com"], dsn(recipient="alias@elsewhere.example", message_id=message_id, action="failed", status="5.1.1"))
    assert subscriber_status(world.store, emails[1]) == "bounced"
    assert [subscriber_status(world.store, e) for e in (emails[0], emails[2])] == ["active", "active"]


def test_bounces_from_maildir_processes_saved_dsns_the_same_way(world, tmp_path: Path):
    emails = world.add_subscribers(5)
    world.run("e1")
    failed, delayed, away = emails[2], emails[3], emails[4]
    saved = mailbox.Maildir(str(tmp_path / "saved"), create=True)
    # As the receiver saves them: the envelope recipient stamped as Delivered-To.
    for email, raw in (
        (failed, dsn(recipient=failed, message_id="<x@y>", action="failed", status="5.1.1", diagnostic="550 5.1.1 No such user")),
        (delayed, dsn(recipient=delayed, message_id="<x@y>", action="delayed", status="4.4.7")),
        (away, auto_reply(away)),
    ):
        verp, _ = envelope_of(world, email)
        saved.add(b"Delivered-To: " + verp.encode() + b"\r\n" + raw)

    out = world.cli("bounces", "--from-maildir", str(tmp_path / "saved"))
    assert out.exit_code == 0, out.output
    text = flat(out.output)
    assert "3 messages, 1 subscribers suppressed" in text
    assert "suppressed (Action: failed, Status: 5.1.1)" in text
    assert subscriber_status(world.store, failed) == "bounced"
    assert bounce_sources(world, failed) == ["dsn"]
    assert subscriber_status(world.store, delayed) == "active"
    assert subscriber_status(world.store, away) == "active"
    world.add_report()
    world.run("e2")
    world.check("e2", expected=[e for e in emails if e != failed])


def test_receiver_creates_its_maildir(world, tmp_path: Path):
    # `newsletter bounces` defaults to --maildir subscribers/bounces, which need not exist.
    emails = world.add_subscribers(2)
    world.run("e1")
    verp, message_id = envelope_of(world, emails[0])
    maildir = tmp_path / "fresh" / "bounces"
    with BounceReceiver(processor(world), maildir=maildir, port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            refused = None
            try:
                smtp.sendmail("", [verp], dsn(recipient=emails[0], message_id=message_id, action="failed", status="5.1.1"))
            except smtplib.SMTPDataError as exc:
                refused = exc
    assert refused is None, f"the receiver refused a DSN: {refused}"
    assert subscriber_status(world.store, emails[0]) == "bounced"
    assert len(mailbox.Maildir(str(maildir), create=False)) == 1
