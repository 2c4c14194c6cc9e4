"""PreparedMessage: the wire form (dot-stuffed once per variant) equals stuffing the message per send."""

from __future__ import annotations

import re

from newsletter.content.render import PREFERENCES_MARK, RECIPIENT_MARK, UNSUBSCRIBE_MARK
from newsletter.delivery.message import MessageIds, PreparedMessage

DOTS = re.compile(rb"(?m)^\.")


def prepared() -> PreparedMessage:
    text = (
        ".leading dot\n..two dots\nmiddle . dot\n"
        f"{RECIPIENT_MARK}\n.{UNSUBSCRIBE_MARK}\n{PREFERENCES_MARK}.\n." + "x" * 200 + "\n.\n"
    )
    html = f'<p>.x</p>\n.<a href="{UNSUBSCRIBE_MARK}">u</a>\n<p>{RECIPIENT_MARK}</p>\n' + ". " * 300
    return PreparedMessage(
        from_name="Video Surveillance News",
        from_address="news@example.com",
        subject="S",
        text=text,
        html=html,
        list_id="L <l.example.com>",
    )


def test_dot_stuffed_wire_form_matches_stuffing_the_plain_message() -> None:
    message = prepared()
    values = {
        "to_address": ".odd.start@example.org",  # a (quoted-style) local part may start with a dot
        "to_name": "Reader",
        "message_id": "<m@example.com>",
        "date": "Thu, 26 Nov 2026 12:00:00 +0000",
        "unsubscribe_url": "https://news.example.com/unsubscribe/MQ.abc",
        "preferences_url": ".relative-looking-but-stuffed",
    }
    plain = message.for_recipient(**values)
    wire = message.for_recipient(**values, dot_stuffed=True)
    assert wire == DOTS.sub(b"..", plain)
    assert wire != plain  # the case really has lines starting with a dot


def test_message_ids_carry_neither_edition_nor_subscriber() -> None:
    # The random part is drawn where rows are written (tests/delivery/test_report_proof.py).
    assert MessageIds("example.com", 7).affixes == ("<", "@example.com>")
