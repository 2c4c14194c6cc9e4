"""Quoted-printable as the wire carries it: what any decoder reads back is the text, and no line
is longer than RFC 2045 allows, also with room left for a spliced value after the last line."""

from __future__ import annotations

import quopri

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.quoted_printable import QP_LINE, qp_encode

# Characters that stress the encoder: escapes ("=", non-ASCII, controls), spaces at line ends, long runs.
text_strategy = st.text(
    alphabet=st.sampled_from(list("ab= \t.é中\n\r-_/?&0123456789"))
    | st.characters(exclude_categories=("Cs",)),
    max_size=400,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=text_strategy, room=st.integers(0, 3), quote_spaces=st.booleans())
def test_any_text_round_trips_and_every_line_fits(text, room, quote_spaces):
    encoded = qp_encode(text, room_at_end=room, quote_spaces=quote_spaces)
    lines = encoded.split(b"\r\n")
    assert all(len(line) <= QP_LINE for line in lines)
    assert len(lines[-1]) + room <= QP_LINE, "the last line leaves room for what is spliced after it"
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    assert all(not line.endswith((b" ", b"\t")) for line in lines), (
        "a space ending a line would be lost in transit"
    )
    if quote_spaces:
        assert b" " not in encoded and b"\t" not in encoded
    decoded = quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode("utf-8")
    assert decoded == text.replace("\r\n", "\n")


def test_an_escape_is_never_cut_by_a_soft_break():
    # 74 safe characters then "é" (=C3=A9): the escape must move whole to the next line.
    encoded = qp_encode("x" * 74 + "é")
    assert encoded.split(b"\r\n") == [b"x" * 74 + b"=", b"=C3=A9"]


def test_the_last_line_leaves_the_room_asked_for_even_when_it_would_fit_a_full_line():
    """Regression: a tail of 74 or 75 octets was left whole, so three octets spliced after it
    made a 78-octet line."""
    for length in (74, 75):
        lines = qp_encode("x" * length, room_at_end=3).split(b"\r\n")
        assert (
            len(lines[-1]) + 3 <= QP_LINE and b"".join(line.rstrip(b"=") for line in lines) == b"x" * length
        )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    value=st.text(alphabet=st.sampled_from(list("ab=. -_/?&:%~!<>\"'é0123456789")), max_size=260)
    | st.from_regex(r"https://[a-z.]{1,90}/unsubscribe/[A-Za-z0-9_.-]{0,120}", fullmatch=True)
)
def test_a_spliced_value_is_encoded_as_the_general_encoder_would_and_stuffed_as_the_regex_would(value):
    """``encode_value`` cuts a value of plain characters into lines itself, and ``dot_stuff``
    skips the regex when no line starts with "."; both give exactly the general answer."""
    from newsletter.delivery.message import DOT_RE, dot_stuff, encode_value

    encoded = encode_value(value)
    assert encoded == qp_encode(value, room_at_end=1, quote_spaces=True)
    assert dot_stuff(encoded) == DOT_RE.sub(b"..", encoded)
    assert dot_stuff(b"." + encoded) == DOT_RE.sub(b"..", b"." + encoded)
