"""The delivery invariants of README "Delivery guarantees", checked in one place for every test package.

Everything here reads real outputs -- rows in the database and the bytes the sink received
-- and replaces no part of the service.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

import sqlalchemy as sa

from newsletter.models import DeliveryState, Edition
from newsletter.storage.schema import deliveries
from newsletter.storage.store import Store
from newsletter.tokens import Purpose, TokenSigner

FINAL_STATES = frozenset(
    {
        DeliveryState.SENT,
        DeliveryState.FAILED,
        DeliveryState.DEFERRED,
        DeliveryState.UNKNOWN,
        DeliveryState.SUPPRESSED,
    }
)
NOT_DELIVERED = frozenset({DeliveryState.FAILED, DeliveryState.DEFERRED, DeliveryState.SUPPRESSED})
UNSUB_RE = re.compile(r"^<(https://[^<>\s]+/unsubscribe/([A-Za-z0-9_.\-]+))>$")
VERP_RE = re.compile(r"^bounces\+([A-Za-z0-9_.\-]+)@(.+)$")


# -- reading messages ----------------------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def header(message: Any, name: str) -> str:
    """One header of a sink message (or of parsed headers), whitespace (folding) collapsed; "" if absent."""
    headers = message if isinstance(message, Message) else message.headers
    value = headers.get(name)
    return "" if value is None else " ".join(str(value).split())


def header_fields(raw: bytes) -> Message:
    """The header fields of a message on the wire (policy.default), without reading its body."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    return _HEADER_PARSER.parsebytes(head + b"\r\n\r\n", headersonly=True)


_HEADER_PARSER = BytesHeaderParser(policy=policy.default)


def assert_wire_format(raw: bytes) -> None:
    """CRLF only and no line over 998 octets (RFC 5322 2.1.1, 2.3)."""
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    if raw.count(b"\n") == raw.count(b"\r") == len(lines) - 1 and max(map(len, lines)) <= 998:
        return  # the common case, checked in C; the loop below names the first offending line
    for number, line in enumerate(lines, 1):
        assert b"\n" not in line, f"bare LF on line {number}: {line[:80]!r}"
        assert b"\r" not in line, f"bare CR on line {number}: {line[:80]!r}"
        assert len(line) <= 998, f"line {number} is {len(line)} octets"


def unsubscribe_token(msg: Message) -> tuple[str, str]:
    """(url, token) from List-Unsubscribe, asserting the one-click header pair (RFC 8058)."""
    values = msg.get_all("List-Unsubscribe")
    assert values is not None and len(values) == 1, f"List-Unsubscribe appears {len(values or [])} times"
    value = " ".join(str(values[0]).split())
    match = UNSUB_RE.match(value)
    assert match, f"List-Unsubscribe is {value!r}"
    posts = msg.get_all("List-Unsubscribe-Post")
    assert posts is not None and len(posts) == 1 and str(posts[0]) == "List-Unsubscribe=One-Click", (
        f"List-Unsubscribe-Post is {posts!r}"
    )
    return match.group(1), match.group(2)


# -- rows ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One outbox row as stored, with the columns the model does not carry."""

    id: int
    subscriber_id: int
    variant_id: int
    email: str  # lower-cased
    message_id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str
    updated_at: datetime | None


def edition_rows(store: Store, edition_id: int) -> list[Row]:
    with store.engine.connect() as conn:
        result = conn.execute(
            sa.select(deliveries).where(deliveries.c.edition_id == edition_id).order_by(deliveries.c.id)
        ).all()
    return [
        Row(
            r.id,
            r.subscriber_id,
            r.variant_id,
            r.email.lower(),
            r.message_id,
            DeliveryState(r.state),
            r.attempts,
            r.next_attempt_at,
            r.last_code,
            r.last_reply or "",
            r.updated_at,
        )
        for r in result
    ]


# -- the check -----------------------------------------------------------------------------


@dataclass
class Checked:
    """What the invariant check found, for further assertions by the test."""

    rows: list[Row]
    messages: list[Any]  # the sink's StoredMessages of this edition
    by_email: dict[str, Row] = field(default_factory=dict)
    messages_by_rcpt: dict[str, list[Any]] = field(default_factory=dict)
    by_row: dict[int, list[Any]] = field(default_factory=dict)
    duplicates: int = 0  # extra copies (same Message-ID received more than once)

    def row(self, email: str) -> Row:
        [row] = [r for r in self.rows if r.email == email.lower()]
        return row

    def state_of(self, email: str) -> DeliveryState:
        return self.row(email).state

    def states(self) -> dict[str, int]:
        """Rows per state, keyed by the state's value ("sent": 5, ...)."""
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            out[r.state.value] += 1
        return dict(out)


def check_delivery(
    store: Store,
    signer: TokenSigner,
    sink_messages: Iterable[Any],
    edition: Edition | str,
    *,
    expected: Iterable[str] | None = None,
    never: Iterable[str] = (),
    max_duplicates: int = 0,
    final: bool = True,
) -> Checked:
    """Assert README "Delivery guarantees" for one edition (an Edition or its key) and return what was found.

    - the edition has rows; every subscriber in it has exactly one row; Message-IDs are
      unique across rows; ``expected``: the rows are exactly these addresses;
    - with ``final`` (the default) every row is in one final state (sent, failed,
      deferred, unknown, suppressed), sent rows reached the sink, and failed, deferred
      and suppressed rows did not;
    - every message of the edition that reached the sink went to one recipient who has a
      row, carries that row's Message-ID, is valid on the wire (CRLF, line lengths), has
      exactly one one-click unsubscribe header pair whose link names that subscriber, and
      the VERP envelope sender naming that row;
    - nobody received two different Message-IDs; a repeat has the same Message-ID (at
      most ``max_duplicates`` repeats in all);
    - the addresses in ``never`` received nothing at all (any edition).
    """
    sink_messages = list(sink_messages)
    key = edition if isinstance(edition, str) else edition.key
    found = store.editions.find_edition(key)
    assert found is not None, f"no edition {key}"
    rows = edition_rows(store, found.id)
    assert rows, f"edition {key} has no delivery rows"
    subscriber_ids = [r.subscriber_id for r in rows]
    assert len(subscriber_ids) == len(set(subscriber_ids)), "a subscriber has two rows in one edition"
    message_ids = [r.message_id for r in rows]
    assert len(message_ids) == len(set(message_ids)), "Message-IDs of the edition's rows are not unique"
    if final:
        bad = [(r.email, r.state.value) for r in rows if r.state not in FINAL_STATES]
        assert not bad, f"rows not in a final state: {bad[:10]}"
    if expected is not None:
        want = {e.lower() for e in expected}
        have = {r.email for r in rows}
        assert have == want, (
            f"rows missing for {sorted(want - have)[:10]}, unexpected rows for {sorted(have - want)[:10]}"
        )
    by_email = {r.email: r for r in rows}
    heads = {id(m): header_fields(m.raw) for m in sink_messages}
    messages = [m for m in sink_messages if header(heads[id(m)], "X-Newsletter-Edition") == key]
    by_row: dict[int, list[Any]] = defaultdict(list)
    messages_by_rcpt: dict[str, list[Any]] = defaultdict(list)
    for m in messages:
        assert len(m.rcpt_tos) == 1, f"one recipient per message, got {m.rcpt_tos}"
        rcpt = m.rcpt_tos[0].lower()
        row = by_email.get(rcpt)
        assert row is not None, f"{rcpt} received edition {key} but has no row in it"
        head = heads[id(m)]
        got_id = header(head, "Message-ID")
        assert got_id == row.message_id, f"{rcpt}: Message-ID {got_id} is not the row's {row.message_id}"
        assert_wire_format(m.raw)
        _, token = unsubscribe_token(head)
        assert signer.read(Purpose.UNSUBSCRIBE, token) == row.subscriber_id, (
            f"{rcpt}: unsubscribe link names someone else"
        )
        verp = VERP_RE.match(m.mail_from)
        assert verp, f"{rcpt}: envelope sender {m.mail_from!r} is not a VERP address"
        assert signer.read(Purpose.BOUNCE, verp.group(1)) == row.id, f"{rcpt}: VERP token names another row"
        by_row[row.id].append(m)
        messages_by_rcpt[rcpt].append(m)
    duplicates = sum(len(v) - 1 for v in by_row.values())
    assert duplicates <= max_duplicates, f"{duplicates} repeated messages (at most {max_duplicates} allowed)"
    if final:
        missing = [r.email for r in rows if r.state is DeliveryState.SENT and not by_row.get(r.id)]
        assert not missing, f"rows marked sent that the server never received: {missing[:10]}"
        leaked = [(r.email, r.state.value) for r in rows if r.state in NOT_DELIVERED and by_row.get(r.id)]
        assert not leaked, f"rows that reached the server although {leaked[:10]}"
    never = {e.lower() for e in never}
    reached = sorted({r.lower() for m in sink_messages for r in m.rcpt_tos} & never)
    assert not reached, f"suppressed addresses reached the server: {reached}"
    return Checked(rows, messages, by_email, dict(messages_by_rcpt), dict(by_row), duplicates)
