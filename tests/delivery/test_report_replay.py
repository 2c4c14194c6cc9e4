"""A judgement counts once: a report replayed, a Maildir judged again by cron, a signed provider
event re-sent inside its freshness window, or an old SNS notification changes nobody again."""

from __future__ import annotations

import json
import smtplib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from newsletter.delivery.bounces import BounceReceiver
from newsletter.storage.schema import bounce_events, judged_reports
from newsletter.web.webhooks.ses import CERT_CACHE, Ses
from tests.delivery.helpers import flat, subscriber_status
from tests.delivery.reports import (
    CERT_URL,
    TOPIC,
    arf,
    client_for,
    dsn,
    envelope_of,
    mailgun_signed,
    make_sns_key,
    processor,
    sendgrid_headers,
    sendgrid_key,
    sns_message,
)


def kinds(world, email: str) -> list[str]:
    sid = world.store.subscribers.find_subscriber(email).id
    with world.store.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(bounce_events.c.kind)
                .where(bounce_events.c.subscriber_id == sid)
                .order_by(bounce_events.c.id)
            ).scalars()
        )


def mailbox_full(recipient: str, message_id: str) -> bytes:
    return dsn(
        recipient=recipient,
        message_id=message_id,
        action="failed",
        status="5.2.2",
        diagnostic="552 5.2.2 Mailbox full",
    )


def test_one_mailbox_full_dsn_replayed_four_times_marked_the_reader_bounced_now_it_counts_once(
    world, tmp_path: Path
):
    world.configure(delivery_soft_bounce_limit=3)
    emails = world.add_subscribers(2)
    world.run("e1")
    reader = emails[0]
    verp, mid = envelope_of(world, reader)
    report = mailbox_full(reader, mid)
    # The same report, and the same report with its own Message-ID changed: still about one message.
    variants = [
        report,
        report,
        report.replace(b"Subject: Delivery", b"Message-ID: <x@mx>\r\nSubject: Delivery"),
    ]
    with BounceReceiver(processor(world), maildir=tmp_path / "in", port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            smtp.sendmail("", [verp], report)
            for raw in variants:
                smtp.sendmail("", [verp], raw)
            smtp.sendmail("", ["postmaster@example.com"], report)  # found by the random Message-ID
    assert kinds(world, reader) == ["soft"]
    assert subscriber_status(world.store, reader) == "active"
    again = processor(world).process(report, envelope_recipients=[verp])
    assert again.action == "repeat" and "counts once" in again.reason
    # A later message's own failure still counts: one per message, not one per reader.
    world.add_report()
    world.run("e2")
    [second] = [
        m for m in world.sink.messages() if m.rcpt_tos == (reader,) and str(m.headers["Message-ID"]) != mid
    ]
    verdict = processor(world).process(
        mailbox_full(reader, str(second.headers["Message-ID"])), envelope_recipients=[second.mail_from]
    )
    assert verdict.action == "soft" and kinds(world, reader) == ["soft", "soft"]


def test_bounces_from_maildir_judged_everything_again_on_every_run_now_each_report_once(
    world, tmp_path: Path
):
    """Regression: four cron runs of `newsletter bounces --from-maildir` over the listener's
    archive suppressed readers who had one soft bounce each."""
    emails = world.add_subscribers(4)
    world.run("e1")
    soft = emails[:3]
    with BounceReceiver(processor(world), maildir=tmp_path / "archive", port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            for email in soft:
                verp, mid = envelope_of(world, email)
                smtp.sendmail("", [verp], mailbox_full(email, mid))
    assert [kinds(world, e) for e in soft] == [["soft"]] * 3
    for _ in range(4):  # as from cron
        out = world.cli("bounces", "--from-maildir", str(tmp_path / "archive"))
        assert out.exit_code == 0, out.output
        assert "3 messages, 0 subscribers suppressed, 0 unmatched" in flat(out.output), out.output
        assert "3 already judged (counted once)" in flat(out.output), out.output
    assert [kinds(world, e) for e in soft] == [["soft"]] * 3
    assert [subscriber_status(world.store, e) for e in emails] == ["active"] * 4


def test_a_replayed_complaint_never_unsubscribes_a_reader_who_came_back(world, tmp_path: Path):
    emails = world.add_subscribers(2)
    world.run("e1")
    reader = emails[0]
    verp, mid = envelope_of(world, reader)
    complaint = arf(recipient=reader, message_id=mid, return_path=verp)
    assert (
        processor(world).process(complaint, envelope_recipients=["fbl@example.com"]).action == "unsubscribed"
    )
    out = world.cli("subscribers", "reactivate", reader)
    assert out.exit_code == 0, out.output
    assert subscriber_status(world.store, reader) == "active"
    assert processor(world).process(complaint, envelope_recipients=["fbl@example.com"]).action == "repeat"
    assert subscriber_status(world.store, reader) == "active"


# -- provider webhooks ---------------------------------------------------------------------------


def test_a_signed_mailgun_or_sendgrid_event_replayed_in_its_window_acted_again_now_once(world):
    sg_private, sg_public = sendgrid_key()
    world.configure(
        delivery_soft_bounce_limit=2,
        webhooks_mailgun_signing_key="mg-key",
        webhooks_sendgrid_public_key=sg_public,
    )
    emails = world.add_subscribers(3)
    world.run("e1")
    mg_reader, sg_reader = emails[0], emails[1]
    _, mg_mid = envelope_of(world, mg_reader)
    _, sg_mid = envelope_of(world, sg_reader)
    signed = mailgun_signed(
        {
            "id": "mg-event-1",
            "event": "failed",
            "severity": "permanent",
            "recipient": mg_reader,
            "delivery-status": {"code": 552, "enhanced-code": "5.2.2", "message": "Mailbox full"},
            "message": {"headers": {"message-id": mg_mid.strip("<>")}},
        },
        "mg-key",
        token=uuid.uuid4().hex,
    )
    body = json.dumps(
        [
            {
                "email": sg_reader,
                "event": "bounce",
                "type": "bounce",
                "status": "5.2.2",
                "reason": "552 5.2.2 Mailbox full",
                "smtp-id": sg_mid,
                "sg_event_id": "sg-1",
            }
        ]
    ).encode()
    headers = sendgrid_headers(sg_private, body)
    # Two processes (two services on one database) see the replays: the store makes them agree.
    first, second = client_for(world), client_for(world)
    actions = []
    for client in (first, second, first):
        actions.append(client.post("/webhooks/mailgun", json=signed).json()["results"][0]["action"])
        r = client.post("/webhooks/sendgrid", content=body, headers=headers)
        actions.append(r.json()["results"][0]["action"])
    assert actions == ["soft", "soft", "repeat", "repeat", "repeat", "repeat"]
    assert kinds(world, mg_reader) == ["soft"] and kinds(world, sg_reader) == ["soft"]
    assert [subscriber_status(world.store, e) for e in emails] == ["active"] * 3


def test_an_ses_notification_dated_a_year_ago_still_acted_now_refused_and_replays_count_once(world):
    key, cert = make_sns_key()
    world.configure(webhooks_ses_topic_arns=TOPIC)
    emails = world.add_subscribers(3)
    world.run("e1")
    client = client_for(world, cert)

    def bounce(email: str) -> dict:
        verp, _ = envelope_of(world, email)
        return {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bouncedRecipients": [
                    {"emailAddress": email, "status": "5.1.1", "diagnosticCode": "550 5.1.1"}
                ],
            },
            "mail": {"source": verp},
        }

    old = sns_message(key, bounce(emails[0]), timestamp=datetime.now(UTC) - timedelta(days=365))
    r = client.post("/webhooks/ses", content=json.dumps(old))
    assert r.status_code == 403 and r.text == "stale"
    ahead = sns_message(key, bounce(emails[0]), timestamp=datetime.now(UTC) + timedelta(hours=1))
    assert client.post("/webhooks/ses", content=json.dumps(ahead)).status_code == 403
    assert subscriber_status(world.store, emails[0]) == "active"
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": emails[1]}]},
        "mail": {"source": envelope_of(world, emails[1])[0]},
    }
    fresh = sns_message(key, complaint)
    assert (
        client.post("/webhooks/ses", content=json.dumps(fresh)).json()["results"][0]["action"]
        == "unsubscribed"
    )
    assert world.cli("subscribers", "reactivate", emails[1]).exit_code == 0
    assert client.post("/webhooks/ses", content=json.dumps(fresh)).json()["results"][0]["action"] == "repeat"
    assert [subscriber_status(world.store, e) for e in emails] == ["active"] * 3


def test_the_sns_certificate_cache_never_shrank_now_it_is_bounded():
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return make_sns_key()[1] if not fetched[:-1] else b"pem"

    from newsletter.config import WebhookSettings

    ses = Ses(WebhookSettings(ses_topic_arns=TOPIC), fetch_cert=fetch)
    for n in range(CERT_CACHE * 4):
        ses.certificate(CERT_URL.replace(".pem", f"-{n}.pem"))
    assert ses.cached_certificates == CERT_CACHE
    ses.certificate(CERT_URL.replace(".pem", f"-{CERT_CACHE * 4 - 1}.pem"))
    assert len(fetched) == CERT_CACHE * 4, "the most recent certificate is served from the cache"


def test_event_ids_are_forgotten_after_their_window(world):
    bounces = world.store.bounces
    now = datetime.now(UTC)
    assert bounces.mark_judged(["mailgun:token:a"], expires_at=now + timedelta(minutes=1), now=now)
    assert not bounces.mark_judged(["mailgun:token:a"], expires_at=now + timedelta(minutes=1), now=now)
    assert bounces.already_judged(["mailgun:token:a", "other"], now=now)
    later = now + timedelta(minutes=2)
    assert not bounces.already_judged(["mailgun:token:a"], now=later)
    assert bounces.mark_judged(["row:1:failure"], now=later)  # kept: no expiry
    with world.store.engine.connect() as conn:
        assert list(conn.execute(sa.select(judged_reports.c.key)).scalars()) == ["row:1:failure"], (
            "expired ids are pruned when the next ones are recorded"
        )
