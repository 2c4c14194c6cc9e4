"""Shared checks for the delivery tests: the invariants of design.md section 6.

Everything here reads real outputs -- rows in the SQLite file and the bytes the sink
received -- and replaces no part of the service.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.storage.store import Store
from newsletter.storage.schema import deliveries, subscribers
from newsletter.tokens import Purpose, TokenSigner

FINAL_STATES = {"sent", "failed", "deferred", "unknown", "suppressed"}
NOT_DELIVERED = {"failed", "deferred", "suppressed"}
UNSUB_RE = re.compile(r"^https://[^<>\s]+/unsubscribe/([A-Za-z0-9_.\-]+)$")
VERP_RE = re.compile(r"^bounces\+([A-Za-z0-9_.\-]+)@(.+)$")


@dataclass
class Row:
    id: int
    subscriber_id: int
    email: str
    message_id: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str
    updated_at: datetime | None


@dataclass
class Checked:
    """What the invariant check found, for further assertions by the test."""

    rows: list[Row]
    messages: list[Any]  # StoredMessage of this edition
    by_row: dict[int, list[Any]] = field(default_factory=dict)
    duplicates: int = 0  # extra copies (same Message-ID received more than once)

    def state_of(self, email: str) -> str:
        return self.row(email).state

    def row(self, email: str) -> Row:
        [row] = [r for r in self.rows if r.email == email.lower()]
        return row

    def states(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            out[r.state] += 1
        return dict(out)


def edition_rows(store: Store, edition_id: int) -> list[Row]:
    with store.engine.connect() as conn:
        result = conn.execute(sa.select(deliveries).where(deliveries.c.edition_id == edition_id).order_by(deliveries.c.id)).all()
    return [
        Row(r.id, r.subscriber_id, r.email.lower(), r.message_id, r.state, r.attempts, r.next_attempt_at, r.last_code, r.last_reply or "", r.updated_at)
        for r in result
    ]


def subscriber_status(store: Store, email: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(sa.select(subscribers.c.status).where(subscribers.c.email == email.lower())).scalar_one())


def header(message: Any, name: str) -> str:
    value = message.headers.get(name)
    return "" if value is None else " ".join(str(value).split())


def edition_messages(sink_messages: Iterable[Any], key: str) -> list[Any]:
    return [m for m in sink_messages if header(m, "X-Newsletter-Edition") == key]


def check_invariants(
    store: Store,
    signer: TokenSigner,
    sink_messages: Iterable[Any],
    edition_key: str,
    *,
    expected: Iterable[str] | None = None,
    never: Iterable[str] = (),
    max_duplicates: int = 0,
    final: bool = True,
) -> Checked:
    """Assert design.md section 6 for one edition and return what was found.

    - every subscriber in the edition has exactly one row, in one final state
      (sent, failed, deferred, unknown, suppressed); ``expected``: exactly these addresses;
    - every message of the edition that reached the sink belongs to a row of its
      recipient, carries that row's Message-ID, valid one-click unsubscribe headers naming
      that subscriber, and the VERP envelope sender naming that row;
    - nobody received two different Message-IDs; a repeat has the same Message-ID
      (at most ``max_duplicates`` repeats in all);
    - sent rows reached the sink; failed, deferred and suppressed rows did not;
    - the addresses in ``never`` received nothing at all (any edition).
    """
    sink_messages = list(sink_messages)
    edition = store.editions.find_edition(edition_key)
    assert edition is not None, f"no edition {edition_key}"
    rows = edition_rows(store, edition.id)
    subs = [r.subscriber_id for r in rows]
    assert len(subs) == len(set(subs)), "a subscriber has two rows in one edition"
    if final:
        bad = [(r.email, r.state) for r in rows if r.state not in FINAL_STATES]
        assert not bad, f"rows not in a final state: {bad[:10]}"
    if expected is not None:
        want = {e.lower() for e in expected}
        have = {r.email for r in rows}
        assert have == want, f"rows missing for {sorted(want - have)[:10]}, unexpected rows for {sorted(have - want)[:10]}"
    by_email = {r.email: r for r in rows}
    messages = edition_messages(sink_messages, edition_key)
    by_row: dict[int, list[Any]] = defaultdict(list)
    for m in messages:
        assert len(m.rcpt_tos) == 1, f"one recipient per message, got {m.rcpt_tos}"
        rcpt = m.rcpt_tos[0].lower()
        row = by_email.get(rcpt)
        assert row is not None, f"{rcpt} received edition {edition_key} but has no row in it"
        assert header(m, "Message-ID") == row.message_id, f"{rcpt}: Message-ID {header(m, 'Message-ID')} is not the row's {row.message_id}"
        assert header(m, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click", f"{rcpt}: bad List-Unsubscribe-Post"
        uris = [u.strip() for u in header(m, "List-Unsubscribe").split(",")]
        https = [u for u in uris if u.startswith("<https://")]
        assert len(https) == 1 and all(u.startswith("<") and u.endswith(">") for u in uris), f"{rcpt}: bad List-Unsubscribe {uris}"
        match = UNSUB_RE.match(https[0][1:-1])
        assert match, f"{rcpt}: List-Unsubscribe is not an unsubscribe link: {https[0]}"
        assert signer.read(Purpose.UNSUBSCRIBE, match.group(1)) == row.subscriber_id, f"{rcpt}: unsubscribe link names someone else"
        verp = VERP_RE.match(m.mail_from)
        assert verp, f"{rcpt}: envelope sender {m.mail_from!r} is not a VERP address"
        assert signer.read(Purpose.BOUNCE, verp.group(1)) == row.id, f"{rcpt}: VERP token names another row"
        by_row[row.id].append(m)
    per_rcpt: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        per_rcpt[m.rcpt_tos[0].lower()].add(header(m, "Message-ID"))
    twice = {k: v for k, v in per_rcpt.items() if len(v) > 1}
    assert not twice, f"recipients with two different Message-IDs: {twice}"
    duplicates = sum(len(v) - 1 for v in by_row.values())
    assert duplicates <= max_duplicates, f"{duplicates} repeated messages (at most {max_duplicates} allowed)"
    if final:
        missing = [r.email for r in rows if r.state == "sent" and not by_row.get(r.id)]
        assert not missing, f"rows marked sent that the server never received: {missing[:10]}"
        leaked = [(r.email, r.state) for r in rows if r.state in NOT_DELIVERED and by_row.get(r.id)]
        assert not leaked, f"rows that reached the server although {leaked[:10]}"
    never = {e.lower() for e in never}
    if never:
        reached = sorted({r.lower() for m in sink_messages for r in m.rcpt_tos} & never)
        assert not reached, f"suppressed addresses reached the server: {reached}"
    return Checked(rows, messages, dict(by_row), duplicates)
