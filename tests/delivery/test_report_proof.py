"""Who may act for a reader: whatever a reader can read in their own mails (their Message-ID,
their VERP address, their links) and every number that counts up, no report they craft about
another reader -- DSN, global DSN, ARF complaint, or a provider webhook -- changes that reader."""

from __future__ import annotations

import json
import mailbox
import re
import smtplib
import uuid
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.delivery.bounces import BounceReceiver
from newsletter.storage.schema import bounce_events, deliveries
from tests.delivery.helpers import subscriber_status
from tests.delivery.reports import (
    TOPIC,
    arf,
    client_for,
    dsn,
    envelope_of,
    global_dsn,
    mailgun_signed,
    make_sns_key,
    postmark_auth,
    processor,
    sendgrid_headers,
    sendgrid_key,
    sns_message,
)

LINK_TOKEN = re.compile(r"/(?:unsubscribe|preferences|manage|confirm)/([A-Za-z0-9_.\-]+)")
SECRETS = {"postmark": "pm-secret", "mailgun": "mg-key"}


def events_about(world, email: str) -> int:
    sid = world.store.subscribers.find_subscriber(email).id
    with world.store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(bounce_events)
                .where(bounce_events.c.subscriber_id == sid)
            ).scalar_one()
        )


def what_a_reader_knows(world, attacker: str, victim: str) -> list[str]:
    """Strings an attacker can read in their own digest or compute from it: their Message-ID and
    VERP address, their link tokens, and the same with numbers moved to the victim's."""
    verp, own_id = envelope_of(world, attacker)
    [mail] = [m for m in world.sink.messages() if m.rcpt_tos == (attacker,)]
    links = set(LINK_TOKEN.findall((mail.text or "") + (mail.html or "")))
    assert links, "the digest's own link tokens are part of what the reader knows"
    ids = {e: world.store.subscribers.find_subscriber(e).id for e in (attacker, victim)}
    edition = world.edition("e1").id
    local, domain = own_id.strip("<>").split("@", 1)
    verp_domain = verp.rsplit("@", 1)[1]
    known = [own_id, verp, f"<{local}@{domain}>".replace(local, local[::-1])]
    # The old shape, computed: the victim's id where the attacker's stands, and the edition's suffix.
    known.append(re.sub(r"\.s\d+\.", f".s{ids[victim]}.", own_id))
    known.append(f"<e{edition}.s{ids[victim]}.{local[-12:]}@{domain}>")
    known += [own_id.replace(str(ids[attacker]), str(ids[victim]))]
    known += [f"bounces+{t}@{verp_domain}" for t in links]
    known += [verp.replace("bounces+", "bounces+x"), verp.replace(str(ids[attacker]), str(ids[victim]))]
    return sorted(set(known))


def test_a_reader_computed_others_message_ids_and_bounced_and_unsubscribed_them_now_nobody(
    world, tmp_path: Path
):
    """Regression: Message-IDs were <eN.sM.X@domain> with X shared by the edition. A reader put
    another reader's subscriber id into their own and mailed a DSN to postmaster@ and an ARF
    complaint to the feedback address: both readers were bounced and unsubscribed."""
    emails = world.add_subscribers(4)
    world.run("e1")
    attacker, bounced, complained = emails[0], emails[1], emails[2]
    _, own_id = envelope_of(world, attacker)
    forged = {}
    for victim in (bounced, complained):
        vid = world.store.subscribers.find_subscriber(victim).id
        aid = world.store.subscribers.find_subscriber(attacker).id
        forged[victim] = re.sub(rf"\.s{aid}\.", f".s{vid}.", own_id)
    maildir = tmp_path / "received"
    with BounceReceiver(processor(world), maildir=maildir, port=0) as receiver:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as smtp:
            smtp.sendmail(
                "attacker@example.org",
                ["postmaster@example.com"],
                dsn(
                    recipient=bounced,
                    message_id=forged[bounced],
                    action="failed",
                    status="5.1.1",
                    diagnostic="550 5.1.1 User unknown",
                ),
            )
            smtp.sendmail(
                "attacker@example.org",
                ["fbl@example.com"],
                arf(recipient=complained, message_id=forged[complained]),
            )
    assert len(mailbox.Maildir(str(maildir), create=False)) == 2, "both kept for review"
    assert [subscriber_status(world.store, e) for e in emails] == ["active"] * 4
    assert events_about(world, bounced) == 0 and events_about(world, complained) == 0
    with world.store.engine.connect() as conn:
        ids = list(conn.execute(sa.select(deliveries.c.message_id)).scalars())
    assert all(re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{32}@example\.com>", m) for m in ids), ids


def test_old_guessable_message_ids_prove_nothing_by_mail_their_verp_tokens_still_act(world):
    """Rows planned before Message-IDs were random keep their Message-IDs (nothing rewritten):
    by mail anyone of that edition could compute them, so only the row's VERP token acts; a
    provider's signed event still finds the row by it."""
    secret = SECRETS["postmark"]
    world.configure(webhooks_postmark_secret=secret)
    emails = world.add_subscribers(3)
    world.run("e1")
    edition = world.edition("e1").id
    old = {}
    with world.store.engine.begin() as conn:
        for row in world.store.outbox.list_deliveries(edition):
            old[row.email] = f"<e{edition}.s{row.subscriber_id}.0123456789ab@example.com>"
            conn.execute(
                deliveries.update().where(deliveries.c.id == row.id).values(message_id=old[row.email])
            )
    by_mid, by_verp, by_provider = emails
    bounce = processor(world)
    verdict = bounce.process(
        dsn(recipient=by_mid, message_id=old[by_mid], action="failed", status="5.1.1"),
        envelope_recipients=["postmaster@example.com"],
    )
    assert verdict.action == "unmatched" and subscriber_status(world.store, by_mid) == "active"
    verp, _ = envelope_of(world, by_verp)
    verdict = bounce.process(
        dsn(recipient=by_verp, message_id=old[by_verp], action="failed", status="5.1.1"),
        envelope_recipients=[verp],
    )
    assert verdict.action == "suppressed" and subscriber_status(world.store, by_verp) == "bounced"
    client = client_for(world)
    event = {"RecordType": "SpamComplaint", "ID": 1, "Email": by_provider, "MessageID": "x"}
    event["Content"] = f"Message-ID: {old[by_provider]}\r\n"
    r = client.post("/webhooks/postmark", json=event, headers=postmark_auth(secret))
    assert r.json()["results"][0]["action"] == "unsubscribed"


# -- the property ---------------------------------------------------------------------------

CHANNELS = ("dsn", "global-dsn", "arf", "ses", "postmark", "mailgun", "sendgrid")


def _message_id_in(proofs: list[str]) -> str:
    return next((p for p in proofs if p.startswith("<")), "<none@attacker.example>")


def _verp_in(proofs: list[str]) -> str:
    return next((p for p in proofs if p.startswith("bounces+")), "postmaster@example.com")


def craft(channel: str, victim: str, proofs: list[str], sns_key) -> tuple[str, object]:
    """One report about ``victim`` through ``channel``, carrying the attacker's ``proofs``."""
    mid, verp = _message_id_in(proofs), _verp_in(proofs)
    if channel == "dsn":
        return channel, dsn(recipient=victim, message_id=mid, action="failed", status="5.1.1")
    if channel == "global-dsn":
        return channel, global_dsn(recipient=victim, message_id=mid)
    if channel == "arf":
        return channel, arf(recipient=victim, message_id=mid, return_path=verp)
    headers = [{"name": "Message-ID", "value": p} for p in proofs]
    if channel == "ses":
        notification = {
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": victim}]},
            "mail": {"source": verp, "headers": headers, "commonHeaders": {"messageId": mid}},
        }
        return channel, sns_message(sns_key[0], notification)
    if channel == "postmark":
        content = "".join(f"Message-ID: {p}\r\n" for p in proofs)
        return channel, {
            "RecordType": "SpamComplaint",
            "ID": uuid.uuid4().int % 10**9,
            "Email": victim,
            "Content": content,
            "Metadata": {"p": proofs},
        }
    if channel == "mailgun":
        return channel, {
            "id": uuid.uuid4().hex,
            "event": "failed",
            "severity": "permanent",
            "recipient": victim,
            "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": "No such user"},
            "message": {"headers": {"message-id": mid.strip("<>"), "x-other": " ".join(proofs)}},
        }
    return channel, [
        {
            "email": victim,
            "event": "spamreport",
            "smtp-id": mid,
            "sg_event_id": uuid.uuid4().hex,
            "unique_args": {"p": proofs},
        }
    ]


def test_no_report_a_reader_crafts_about_another_reader_changes_them(world):
    world.add_subscribers(3)
    sns_key = make_sns_key()
    sg_private, sg_public = sendgrid_key()
    world.configure(
        webhooks_ses_topic_arns=TOPIC,
        webhooks_postmark_secret=SECRETS["postmark"],
        webhooks_mailgun_signing_key=SECRETS["mailgun"],
        webhooks_sendgrid_public_key=sg_public,
    )
    world.run("e1")
    attacker, victim, bystander = sorted(m.rcpt_tos[0] for m in world.sink.messages())
    known = what_a_reader_knows(world, attacker, victim)
    client = client_for(world, sns_key[1])
    bounce = processor(world)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        channel=st.sampled_from(CHANNELS),
        proofs=st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True),
        named=st.sampled_from([victim, victim.upper(), f"<{victim}>"]),
    )
    def attack(channel: str, proofs: list[str], named: str) -> None:
        kind, report = craft(channel, named.strip("<>"), proofs, sns_key)
        if kind in ("dsn", "global-dsn", "arf"):
            for envelope in {_verp_in(proofs), "postmaster@example.com"}:
                bounce.process(report, envelope_recipients=[envelope])  # type: ignore[arg-type]
        elif kind == "ses":
            client.post("/webhooks/ses", content=json.dumps(report))
        elif kind == "postmark":
            client.post("/webhooks/postmark", json=report, headers=postmark_auth(SECRETS["postmark"]))
        elif kind == "mailgun":
            body = mailgun_signed(report, SECRETS["mailgun"], token=uuid.uuid4().hex)  # type: ignore[arg-type]
            assert client.post("/webhooks/mailgun", json=body).status_code == 200
        else:
            body = json.dumps(report).encode()
            r = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(sg_private, body))
            assert r.status_code == 200
        assert subscriber_status(world.store, victim) == "active", (channel, proofs)
        assert events_about(world, victim) == 0, (channel, proofs)

    attack()
    assert subscriber_status(world.store, bystander) == "active" and events_about(world, bystander) == 0
