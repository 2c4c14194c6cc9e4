"""Quoted-printable (RFC 2045 6.7) with CRLF line ends and lines of at most 76 characters.

Here rather than in delivery.message because the renderer measures a digest's final
size in the same encoding (the size cap is about the bytes that go out).
"""

from __future__ import annotations

QP_LINE = 76  # RFC 2045 6.7: encoded lines at most 76 characters, the soft-break "=" included
_QP_SAFE = frozenset(range(33, 127)) - {ord("=")}


def _escapes(quote_spaces: bool) -> dict[int, str]:
    """str.translate table over latin-1 characters (one per octet): unsafe octets become "=XX"."""
    keep = _QP_SAFE if quote_spaces else _QP_SAFE | {32, 9}
    return {b: f"={b:02X}" for b in range(256) if b not in keep}


_ESCAPES = {False: _escapes(False), True: _escapes(True)}


def qp_encode(text: str, *, room_at_end: int = 0, quote_spaces: bool = False) -> bytes:
    """Quoted-printable with CRLF line ends and no line over 76 octets.

    ``room_at_end``: octets the caller appends to the last line (a soft break "="
    before a spliced value), so that line stays within 76 as well. ``quote_spaces``
    encodes every space and tab (values spliced mid-line, whose ends are not line ends).
    Escapes are never split across a soft break.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    for index, line in enumerate(lines):
        # Each octet as one latin-1 character, so translate (in C) escapes them all at once:
        # this runs three times per recipient, for the address and the two links.
        encoded = line.encode("utf-8").decode("latin-1").translate(_ESCAPES[quote_spaces])
        if encoded[-1:] in (" ", "\t"):  # a space or tab ending a line would be lost in transit
            encoded = encoded[:-1] + f"={ord(encoded[-1]):02X}"
        limit = QP_LINE - (room_at_end if index == len(lines) - 1 else 0)
        start = 0
        while len(encoded) - start > limit:  # the tail does not fit: soft break after at most 75
            cut = min(start + QP_LINE - 1, len(encoded) - 1)
            # "=" only ever starts an escape (a literal "=" is "=3D"): never cut one in two.
            if encoded[cut - 1] == "=":
                cut -= 1
            elif encoded[cut - 2] == "=":
                cut -= 2
            out.append(encoded[start:cut] + "=")
            start = cut
        out.append(encoded[start:])
    return "\r\n".join(out).encode("ascii")
