"""Quoted-printable (RFC 2045 6.7) with CRLF line ends and lines of at most 76 characters.

Here rather than in delivery.message because the renderer measures a digest's final
size in the same encoding (the size cap is about the bytes that go out).
"""

from __future__ import annotations

QP_LINE = 76  # RFC 2045 6.7: encoded lines at most 76 characters, the soft-break "=" included
_QP_SAFE = frozenset(range(33, 127)) - {ord("=")}


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
        data = line.encode("utf-8")
        last = len(data) - 1
        tokens = [
            chr(b) if b in _QP_SAFE or (b in (32, 9) and not quote_spaces and i != last) else f"={b:02X}"
            for i, b in enumerate(data)
        ]
        limit = QP_LINE - (room_at_end if index == len(lines) - 1 else 0)
        remaining = sum(map(len, tokens))
        current: list[str] = []
        width = 0
        for token in tokens:
            if width + len(token) > QP_LINE - 1 and width + remaining > limit:  # the tail does not fit: soft break
                out.append("".join(current) + "=")
                current, width = [], 0
            current.append(token)
            width += len(token)
            remaining -= len(token)
        out.append("".join(current))
    return "\r\n".join(out).encode("ascii")
