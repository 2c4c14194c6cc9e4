"""Bounces that come later: RFC 3464 DSNs to the VERP envelope sender, the receiver's
audit Maildir, and `newsletter bounces --from-maildir`."""

from __future__ import annotations

import mailbox
import smtplib
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.delivery.bounces import BounceReceiver
from newsletter.delivery.judgement import Verdict, enhanced_status, judge
from newsletter.delivery.smtp_client import helo_name
from newsletter.delivery.suppression import BLOCKED_BURST
from newsletter.errors import ConfigError
from newsletter.sink.faults import FaultRule
from newsletter.storage.schema import bounce_events
from tests.delivery.helpers import bounce_count, flat, subscriber_status
from tests.delivery.reports import arf, auto_reply, dsn, envelope_of, global_dsn, processor
from tests.factories import build_settings
from tests.servers import free_port


def bounce_sources(world, email: str) -> list[str]:
    sid = world.store.subscribers.find_subscriber(email).id
    with world.store.engine.connect() as conn:
        return [
            r.source
            for r in conn.execute(
                sa.select(bounce_events.c.source).where(bounce_events.c.subscriber_id == sid)
            )
        ]


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
            smtp.sendmail(
                "",
                [verp_failed],
                dsn(
                    recipient="forwarded@elsewhere.example",
                    message_id="<unrelated@x>",
                    action="failed",
                    status="5.1.1",
                    diagnostic="550 5.1.1 User unknown",
                ),
            )
            smtp.sendmail(
                "",
                [verp_delayed],
                dsn(recipient=delayed, message_id=mid_delayed, action="delayed", status="4.4.7"),
            )
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
    assert len([m for m in world.sink.messages() if m.rcpt_tos == (failed,)]) == 1, (
        "only the first edition reached it"
    )

    # Replaying the audit Maildir changes nothing more and says what each message was.
    out = world.cli("bounces", "--from-maildir", str(maildir))
    assert out.exit_code == 0, out.output
    assert "3 messages" in flat(out.output)
    assert subscriber_status(world.store, delayed) == "active"


def test_dsn_found_by_original_message_id_only_when_it_names_that_rows_address(world, tmp_path: Path):
    # Without a VERP token, the original Message-ID authenticates a DSN only for the address
    # of its own outbox row (it used to suppress whoever the report named, or an alias).
    emails = world.add_subscribers(3)
    world.run("e1")
    _, message_id = envelope_of(world, emails[1])
    mailbox.Maildir(str(tmp_path / "b"), create=True)
    with BounceReceiver(processor(world), maildir=tmp_path / "b", port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            smtp.sendmail(
                "",
                ["postmaster@example.com"],
                dsn(
                    recipient="alias@elsewhere.example",
                    message_id=message_id,
                    action="failed",
                    status="5.1.1",
                ),
            )
            assert subscriber_status(world.store, emails[1]) == "active", (
                "an alias the row does not name proves nothing"
            )
            smtp.sendmail(
                "",
                ["postmaster@example.com"],
                dsn(recipient=emails[1], message_id=message_id, action="failed", status="5.1.1"),
            )
    assert subscriber_status(world.store, emails[1]) == "bounced"
    assert [subscriber_status(world.store, e) for e in (emails[0], emails[2])] == ["active", "active"]


def test_bounces_from_maildir_processes_saved_dsns_the_same_way(world, tmp_path: Path):
    emails = world.add_subscribers(5)
    world.run("e1")
    failed, delayed, away = emails[2], emails[3], emails[4]
    saved = mailbox.Maildir(str(tmp_path / "saved"), create=True)
    # As the receiver saves them: the envelope recipient stamped as Delivered-To.
    for email, raw in (
        (
            failed,
            dsn(
                recipient=failed,
                message_id="<x@y>",
                action="failed",
                status="5.1.1",
                diagnostic="550 5.1.1 No such user",
            ),
        ),
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
                smtp.sendmail(
                    "",
                    [verp],
                    dsn(recipient=emails[0], message_id=message_id, action="failed", status="5.1.1"),
                )
            except smtplib.SMTPDataError as exc:
                refused = exc
    assert refused is None, f"the receiver refused a DSN: {refused}"
    assert subscriber_status(world.store, emails[0]) == "bounced"
    assert len(mailbox.Maildir(str(maildir), create=False)) == 1


# -- the one judgement, and who may act ----------------------------------------------------


def bounce_kinds(world, email: str) -> list[str]:
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


def deliver_reports(world, tmp_path: Path, reports: list[tuple[str, bytes]]) -> Path:
    """Send (envelope recipient, raw report) pairs to a BounceReceiver; its audit Maildir."""
    maildir = tmp_path / "received"
    with BounceReceiver(processor(world), maildir=maildir, port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            for rcpt, raw in reports:
                smtp.sendmail("", [rcpt], raw)
    return maildir


def test_every_5xx_dsn_was_a_hard_bounce_now_spam_full_mailbox_and_dmarc_do_not_suppress(
    world, tmp_path: Path
):
    emails = world.add_subscribers(5)
    world.run("e1")
    cases = {
        emails[0]: ("5.7.1", "550 5.7.1 Message content rejected as spam", "blocked"),
        emails[1]: ("5.2.2", "552 5.2.2 Mailbox full", "soft"),
        emails[2]: (
            "5.7.26",
            "550 5.7.26 Unauthenticated email is not accepted due to domain's DMARC policy",
            "blocked",
        ),
        emails[3]: ("5.1.1", "550 5.1.1 User unknown", "hard"),
    }
    reports = []
    for email, (status, diagnostic, _kind) in cases.items():
        verp, mid = envelope_of(world, email)
        reports.append(
            (
                verp,
                dsn(recipient=email, message_id=mid, action="failed", status=status, diagnostic=diagnostic),
            )
        )
    deliver_reports(world, tmp_path, reports)
    for email, (_status, _diag, kind) in cases.items():
        assert bounce_kinds(world, email) == [kind], email
        assert subscriber_status(world.store, email) == ("bounced" if kind == "hard" else "active"), email
    out = world.cli("editions", str(world.edition("e1").id))
    text = flat(out.output)
    assert (
        "2 × blocked example.org" in text
        and "1 × hard example.org" in text
        and "1 × soft example.org" in text
    ), text


@pytest.mark.parametrize(
    ("code", "text", "verdict"),
    [
        (
            550,
            "5.1.1 <a@b.example>: Recipient address rejected: User unknown in local recipient table",
            Verdict.BAD_ADDRESS,
        ),
        (550, "5.1.10 Recipient address has null MX", Verdict.BAD_ADDRESS),
        (550, "5.2.1 Mailbox disabled", Verdict.BAD_ADDRESS),
        (554, "5.7.1 Message rejected as spam", Verdict.BLOCKED),
        (550, "5.7.26 DMARC policy", Verdict.BLOCKED),
        (550, "Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org", Verdict.BLOCKED),
        (552, "5.2.2 Mailbox full", Verdict.SOFT),
        (451, "4.4.7 Message expired", Verdict.SOFT),
        (504, "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", Verdict.SENDER),
        (554, "5.7.1 <a@b.example>: Relay access denied", Verdict.SENDER),
        (550, "Requested action not taken: user unknown", Verdict.BAD_ADDRESS),
    ],
)
def test_the_same_5_7_1_was_soft_at_rcpt_and_hard_in_a_dsn_now_one_judgement(code, text, verdict):
    at_rcpt = judge(code, text, stage="rcpt")
    status = enhanced_status(text)
    in_dsn = judge(None, f"{code} {text}", status=status, stage="dsn")
    assert at_rcpt.verdict is verdict, at_rcpt
    assert in_dsn.verdict is verdict, in_dsn


@settings(max_examples=60, deadline=None)
@given(
    detail=st.integers(0, 30),
    code=st.sampled_from([550, 553, 554, None]),
    words=st.sampled_from(["", "spam", "policy", "user unknown", "blocked"]),
)
def test_no_5_7_x_policy_refusal_ever_suppresses_a_reader(detail, code, words):
    judgement = judge(code, f"5.7.{detail} rejected {words}", status=f"5.7.{detail}", stage="dsn")
    assert (not judgement.suppresses and not judgement.blames_reader) or judgement.verdict is Verdict.SOFT


def test_forged_bounces_suppress_nobody_and_are_kept_as_unmatched(world, tmp_path: Path):
    emails = world.add_subscribers(4)
    world.run("e1")
    victim, other = emails[0], emails[1]
    verp_victim, _ = envelope_of(world, victim)
    _, other_mid = envelope_of(world, other)
    tampered = verp_victim.replace("bounces+", "bounces+x")
    reports = [
        # A DSN to postmaster@ naming a subscriber, Message-ID unknown.
        (
            "postmaster@example.com",
            dsn(recipient=victim, message_id="<forged@attacker.example>", action="failed", status="5.1.1"),
        ),
        # A token that does not verify.
        (
            tampered,
            dsn(recipient=victim, message_id="<forged@attacker.example>", action="failed", status="5.1.1"),
        ),
        # A real Message-ID -- of another reader's row.
        (
            "postmaster@example.com",
            dsn(recipient=victim, message_id=other_mid, action="failed", status="5.1.1"),
        ),
        # A complaint naming the reader, without proof.
        ("abuse@example.com", arf(recipient=victim, message_id="<forged@attacker.example>")),
    ]
    maildir = deliver_reports(world, tmp_path, reports)
    assert all(subscriber_status(world.store, e) == "active" for e in emails)
    assert bounce_kinds(world, victim) == [] and bounce_kinds(world, other) == []
    assert len(mailbox.Maildir(str(maildir), create=False)) == 4, "everything is kept for audit"
    out = world.cli("bounces", "--from-maildir", str(maildir))
    assert out.exit_code == 0, out.output
    text = flat(out.output)
    assert text.count(": unmatched (") == 4 and "4 unmatched" in text, text
    assert all(subscriber_status(world.store, e) == "active" for e in emails)


def test_global_dsns_were_ignored_and_postfix_auto_submitted_dsns_logged_as_auto_replies(
    world, tmp_path: Path
):
    emails = world.add_subscribers(3)
    world.run("e1")
    target = emails[1]
    verp, mid = envelope_of(world, target)
    deliver_reports(world, tmp_path, [(verp, global_dsn(recipient=target, message_id=mid))])
    assert subscriber_status(world.store, target) == "bounced"
    assert bounce_kinds(world, target) == ["hard"]
    # Without the token: the Message-ID plus the UTF-8 Final-Recipient naming the row's address.
    other = emails[2]
    _, other_mid = envelope_of(world, other)
    deliver_reports(
        world, tmp_path, [("postmaster@example.com", global_dsn(recipient=other, message_id=other_mid))]
    )
    assert subscriber_status(world.store, other) == "bounced"
    assert subscriber_status(world.store, emails[0]) == "active"


def test_mail_expired_in_a_relay_was_ignored_now_a_soft_bounce(world, tmp_path: Path):
    world.configure(delivery_soft_bounce_limit=2)
    emails = world.add_subscribers(2)
    target = emails[0]

    def expired(message_id: str) -> bytes:
        return dsn(
            recipient=target,
            message_id=message_id,
            action="failed",
            status="4.4.7",
            diagnostic="delivery temporarily suspended: connect to mx.example.org: Connection timed out",
        )

    world.run("e1")
    verp, mid = envelope_of(world, target)
    deliver_reports(world, tmp_path, [(verp, expired(mid))])
    assert bounce_kinds(world, target) == ["soft"]
    assert subscriber_status(world.store, target) == "active"
    # The next digest expires too (the same report again would count once: see test_report_replay).
    world.add_report()
    world.run("e2")
    [(verp2, mid2)] = [
        (m.mail_from, str(m.headers["Message-ID"]))
        for m in world.sink.messages()
        if m.rcpt_tos == (target,) and str(m.headers["Message-ID"]) != mid
    ]
    deliver_reports(world, tmp_path, [(verp2, expired(mid2))])
    assert subscriber_status(world.store, target) == "bounced", "delivery.soft_bounce_limit expiries suppress"
    assert subscriber_status(world.store, emails[1]) == "active"


def test_arf_complaint_unsubscribes_the_reader_it_proves(world, tmp_path: Path):
    emails = world.add_subscribers(3)
    world.run("e1")
    verp, mid = envelope_of(world, emails[0])
    _, mid1 = envelope_of(world, emails[1])
    # Proof by the original's Return-Path token (feedback loops redact recipients)...
    deliver_reports(
        world,
        tmp_path,
        [("fbl@example.com", arf(recipient="redacted@mailbox.example", message_id=mid, return_path=verp))],
    )
    # ...or by the Message-ID of the row of the address it names.
    deliver_reports(world, tmp_path, [("fbl@example.com", arf(recipient=emails[1], message_id=mid1))])
    assert subscriber_status(world.store, emails[0]) == "unsubscribed"
    assert subscriber_status(world.store, emails[1]) == "unsubscribed"
    assert subscriber_status(world.store, emails[2]) == "active"


def test_non_standard_bounce_layout_is_read_by_flufl_bounce_and_still_needs_proof(world, tmp_path: Path):
    emails = world.add_subscribers(3)
    world.run("e1")
    target, stranger = emails[0], emails[1]
    verp, _ = envelope_of(world, target)

    def qmail(address: str) -> bytes:
        return "\r\n".join(
            [
                "From: MAILER-DAEMON@mx.example.net",
                "Subject: failure notice",
                "",
                "Hi. This is the qmail-send program at mx.example.net.",
                "I'm afraid I wasn't able to deliver your message to the following addresses.",
                "This is a permanent error; I've given up. Sorry it didn't work out.",
                "",
                f"<{address}>:",
                "Sorry, no mailbox here by that name. (#5.1.1)",
                "",
                "--- Below this line is a copy of the message.",
                "",
            ]
        ).encode()

    deliver_reports(world, tmp_path, [(verp, qmail(target)), ("postmaster@example.com", qmail(stranger))])
    assert subscriber_status(world.store, target) == "bounced"
    assert subscriber_status(world.store, stranger) == "active", "no token, no Message-ID: unmatched"


# -- our own side: HELO, connections, honest exits ------------------------------------------


def test_ehlo_localhost_refusal_was_blamed_on_readers_now_pauses_and_blames_nobody(world):
    world.configure(smtp_retries=1)
    emails = world.add_subscribers(6)
    world.sink.faults.add(
        FaultRule(
            stage="rcpt",
            code=504,
            text="5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
        )
    )
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 1, out.output
    text = flat(out.output)
    assert "nothing was delivered" in text and "smtp.helo_name" in text, text
    edition = world.edition("e1")
    assert edition.status.value == "paused" and "not a reader" in edition.reason
    checked = world.check("e1", final=False, expected=emails)
    assert checked.states() == {"pending": 6}, "no row failed for good"
    assert bounce_count(world.store) == 0
    assert all(subscriber_status(world.store, e) == "active" for e in emails)

    world.sink.faults.clear()
    out = world.cli("send", "--resume")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 6} and checked.duplicates == 0


def test_helo_name_setting_and_localhost_refused_for_a_remote_server(tmp_path: Path):
    settings_ = build_settings(tmp_path, NEWSLETTER_SMTP_HELO_NAME="news.example.com")
    assert helo_name(settings_.smtp) == "news.example.com"
    with pytest.raises(ConfigError) as excinfo:
        build_settings(
            tmp_path, NEWSLETTER_SMTP_HOST="smtp.example.net", NEWSLETTER_SMTP_HELO_NAME="localhost"
        )
    assert "smtp.helo_name" in excinfo.value.hint
    # Loopback relays may be greeted as localhost.
    assert build_settings(tmp_path, NEWSLETTER_SMTP_HELO_NAME="localhost").smtp.helo_name == "localhost"


def test_default_helo_of_localhost_towards_a_remote_server_is_refused_before_any_row_is_tried(
    world, monkeypatch
):
    # The regression's machine called itself 'localhost' (socket.getfqdn()); pin that here.
    monkeypatch.setattr("newsletter.delivery.smtp_client.LOCAL_HOSTNAME", "localhost")
    world.configure(smtp_host="smtp.example.net")
    emails = world.add_subscribers(3)
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 1 and "smtp.helo_name" in flat(out.output), out.output
    assert "Traceback" not in out.output
    assert all(r.state == "pending" for r in world.check("e1", final=False, expected=emails).rows)
    assert bounce_count(world.store) == 0


def test_a_policy_burst_from_one_domain_defers_that_domain_and_suppresses_nobody(world):
    world.configure(smtp_retries=0, smtp_connections=1)
    blocked = world.add_subscribers(12, prefix="b", domain="blocking.example")
    fine = world.add_subscribers(6, prefix="f", domain="fine.example")
    rule = world.sink.faults.add(
        FaultRule(
            stage="rcpt",
            code=550,
            text="5.7.1 Service unavailable, client host blocked using Spamhaus",
            to="re:.*@blocking\\.example$",
        )
    )
    world.run("e1")
    checked = world.check("e1", final=False, expected=blocked + fine)
    assert all(checked.state_of(e) == "sent" for e in fine)
    assert world.sink.faults.fired(rule) == BLOCKED_BURST, "the domain pauses after the burst"
    states = [checked.state_of(e) for e in blocked]
    assert (
        states.count("failed") == BLOCKED_BURST and states.count("deferred") == len(blocked) - BLOCKED_BURST
    )
    assert all(subscriber_status(world.store, e) == "active" for e in blocked + fine)
    out = world.cli("editions", str(world.edition("e1").id))
    assert f"{BLOCKED_BURST} × blocked blocking.example" in flat(out.output)


class _HttpOnly:
    """A TCP listener that answers like a web server: what `smtp.port` set to an HTTP port meets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")


@pytest.mark.parametrize("case", ["closed port", "unknown host", "http port", "tls mismatch", "auth failure"])
def test_misconfiguration_looked_like_success_now_exits_nonzero_with_a_hint(world, case):
    overrides = {
        "closed port": {"smtp_port": free_port()},
        "unknown host": {"smtp_host": "no-such-host.invalid", "smtp_helo_name": "news.example.com"},
        "http port": {"smtp_port": _HttpOnly().port},
        "tls mismatch": {"smtp_security": "tls"},
        "auth failure": {"smtp_username": "news", "smtp_password": "wrong"},
    }[case]
    world.configure(smtp_retries=0, **overrides)
    emails = world.add_subscribers(2)
    out = world.cli("send", "--key", "e1")
    text = flat(out.output)
    assert out.exit_code == 1, out.output
    assert "nothing was delivered" in text and "Hint:" in text, text
    hint = {
        "closed port": "smtp.port",
        "unknown host": "smtp.host",
        "http port": "smtp.port",
        "tls mismatch": "smtp.security",
        "auth failure": "smtp.username",
    }[case]
    assert hint in text, text
    assert "Traceback" not in out.output
    assert bounce_count(world.store) == 0
    assert all(subscriber_status(world.store, e) == "active" for e in emails)


def test_resume_waited_for_the_backoff_now_resume_now_retries_at_once(world):
    world.configure(smtp_port=free_port(), smtp_retries=0)
    emails = world.add_subscribers(4)
    out = world.cli("send", "--key", "e1")
    assert out.exit_code == 1
    assert world.check("e1", final=False, expected=emails).states() == {"deferred": 4}
    world.configure(smtp_port=world.sink.port)
    out = world.cli("send", "--resume")
    assert world.check("e1", final=False, expected=emails).states() == {"deferred": 4}, (
        "not due yet: --resume alone waits"
    )
    out = world.cli("send", "--resume", "--now")
    assert out.exit_code == 0, out.output
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 4} and checked.duplicates == 0


def test_a_late_bounce_for_a_removed_readers_row_suppresses_nobody_else(world):
    """Regression: outbox row ids were given out again on SQLite after `subscribers remove` deleted
    the highest rows, so a late bounce naming the removed reader's row hit whoever got its id."""
    first = world.add_subscribers(1, prefix="gone")
    world.run("e1")
    verp_gone, _ = envelope_of(world, first[0])
    gone_row = world.store.outbox.list_deliveries(world.edition("e1").id)[0].id
    assert world.store.subscribers.remove_subscriber(first[0])
    later = world.add_subscribers(1, prefix="later")
    world.add_report()
    world.run("e2")
    (row,) = world.store.outbox.list_deliveries(world.edition("e2").id)
    assert row.id != gone_row, "the deleted row's id was given out again"
    processor(world).process(
        dsn(
            recipient=first[0],
            message_id="<unrelated@x>",
            action="failed",
            status="5.1.1",
            diagnostic="550 5.1.1 User unknown",
        ),
        envelope_recipients=[verp_gone],
    )
    assert subscriber_status(world.store, later[0]) == "active" and bounce_sources(world, later[0]) == []


def test_bounces_report_lists_the_ten_domains_with_most_failures_and_counts_the_rest(world):
    # Regression: `bounces --report` printed every failing domain (589 lines on a big list).
    for i in range(15):
        world.add_subscribers(1 + (i == 0), prefix=f"r{i}", domain=f"d{i:02}.example")
    world.sink.faults.add(FaultRule(stage="rcpt", action="reply", code=550, text="5.1.1 No such user"))
    world.run("e1")
    out = world.cli("bounces", "--report", "7")
    assert out.exit_code == 0, out.output
    domains = [line for line in out.output.splitlines() if "× hard" in line]
    assert len(domains) == 10 and "2 × hard      d00.example" in domains[0], domains
    assert "and 5 more domains (5 failures)" in flat(out.output)
