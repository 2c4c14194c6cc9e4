"""Permanent failures: 5xx at RCPT and DATA, hard and soft bounces, suppression across
editions and operator reactivation."""

from __future__ import annotations

import sqlalchemy as sa

from newsletter.sink.faults import FaultRule
from newsletter.storage.schema import bounce_events
from tests.delivery.helpers import flat, subscriber_status

# (stage, code, text, kind) -- kind: hard suppresses at once, soft only counts, blocked (a policy
# refusal: about us, not the reader) never suppresses.
CASES = [
    ("rcpt", 550, "5.1.1 Mailbox unavailable", "hard"),
    ("data", 550, "5.1.1 No such user here", "hard"),
    ("rcpt", 553, "5.1.3 Mailbox name not allowed", "hard"),
    ("rcpt", 550, "Requested action not taken: user unknown", "hard"),
    ("data", 554, "5.7.1 Message rejected as spam", "blocked"),
    ("rcpt", 552, "5.2.2 Mailbox full", "soft"),
]


def bounces_of(world, email: str) -> list[tuple[str, str]]:
    subscriber = world.store.subscribers.find_subscriber(email)
    with world.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(bounce_events.c.kind, bounce_events.c.source).where(
                bounce_events.c.subscriber_id == subscriber.id
            )
        ).all()
    return [(r.kind, r.source) for r in rows]


def test_5xx_fails_the_row_with_code_and_text_and_hard_bounces_suppress(world):
    world.configure(smtp_retries=2)
    emails = world.add_subscribers(len(CASES) + 4)
    victims = dict(zip(emails, CASES, strict=False))
    rules = {
        e: world.sink.faults.add(FaultRule(stage=stage, code=code, text=text, to=e))
        for e, (stage, code, text, _) in victims.items()
    }

    result = world.run("e1")
    checked = world.check("e1", expected=emails)
    assert checked.states() == {"sent": 4, "failed": len(CASES)}
    for email, (_stage, code, text, kind) in victims.items():
        row = checked.row(email)
        assert (row.state, row.last_code) == ("failed", code), email
        assert text in row.last_reply, (email, row.last_reply)
        assert world.sink.faults.fired(rules[email]) == 1, "a 5xx is not retried"
        assert bounces_of(world, email) == [(kind, "smtp")], email
        assert subscriber_status(world.store, email) == ("bounced" if kind == "hard" else "active"), email
    assert result.edition.status.value == "sent"

    # The next edition: hard-bounced addresses get no row and nothing reaches the server.
    world.sink.faults.clear()
    world.add_report()
    world.run("e2")
    hard = [e for e, case in victims.items() if case[3] == "hard"]
    soft = [e for e, case in victims.items() if case[3] in ("soft", "blocked")]
    checked = world.check("e2", expected=[e for e in emails if e not in hard], never=hard)
    assert checked.states() == {"sent": len(emails) - len(hard)}
    assert all(checked.state_of(e) == "sent" for e in soft)


def test_soft_bounces_over_editions_suppress_and_reactivate_restores(world):
    world.configure(smtp_retries=0, delivery_soft_bounce_limit=3)
    emails = world.add_subscribers(4)
    victim = emails[0]
    world.sink.faults.add(FaultRule(stage="data", code=552, text="5.2.2 Mailbox full", to=victim))

    for n in (1, 2, 3):
        world.add_report()
        world.run(f"e{n}")
        checked = world.check(f"e{n}", expected=emails)
        assert checked.state_of(victim) == "failed"
        assert subscriber_status(world.store, victim) == ("bounced" if n == 3 else "active"), (
            f"after edition {n}"
        )

    world.add_report()
    world.run("e4")
    world.check("e4", expected=emails[1:], never=[victim])

    out = world.cli("subscribers", "reactivate", victim.upper())
    assert out.exit_code == 0, out.output
    assert "active again" in flat(out.output) and "bounced" in flat(out.output)
    assert subscriber_status(world.store, victim) == "active"

    world.sink.faults.clear()
    world.add_report()
    world.run("e5")
    checked = world.check("e5", expected=emails)
    assert checked.states() == {"sent": 4}
    assert len(checked.by_row[checked.row(victim).id]) == 1


def test_reactivate_unknown_address_is_an_error(world):
    world.add_subscribers(1)
    out = world.cli("subscribers", "reactivate", "nobody@example.org")
    assert out.exit_code != 0
    assert "not a subscriber" in out.output
