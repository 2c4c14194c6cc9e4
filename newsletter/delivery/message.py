"""MIME building: correct mail bytes, prepared once per variant, spliced per recipient.

``PreparedMessage`` encodes a variant's text and HTML parts once (quoted-printable,
CRLF line ends, no line over 76 octets) around the per-recipient markers of
``newsletter.content.render``. ``for_recipient`` then joins pre-encoded pieces with the
recipient's values: no MIME objects, no re-encoding of the body, a few
microseconds per message.

Rules kept here (RFC 5322 / 2045 / 8058):
- CRLF only on the wire; every body line <= 76 octets, header lines folded.
- A CR or LF in a value never starts a header: values are checked before use.
- List-Unsubscribe carries exactly one https (or local http) URI in angle brackets,
  List-Unsubscribe-Post is exactly "List-Unsubscribe=One-Click".
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from newsletter.config import MailSettings
from newsletter.content.quoted_printable import QP_LINE, qp_encode
from newsletter.content.render import (
    ESCAPED_PERCENTS,
    MARKS,
    PREFERENCES_MARK,
    RECIPIENT_MARK,
    UNSUBSCRIBE_MARK,
)

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
MARK_RE = re.compile("(" + "|".join(re.escape(m) for m in MARKS) + ")")
ONE_CLICK = "List-Unsubscribe=One-Click"


class HeaderInjection(ValueError):
    """A header value held a CR, LF or NUL."""


def single_line(value: str) -> str:
    """The value unchanged if it has no CR, LF or NUL; HeaderInjection otherwise."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise HeaderInjection(f"header value contains a line break: {value[:40]!r}")
    return value


def encode_header(name: str, value: str) -> bytes:
    """One header, RFC 2047-encoded when not ASCII, folded with CRLF under 78 octets per line.

    Folded at 76: a continuation line is a space plus one encoded word, and an
    encoded word may be at most 75 octets (RFC 2047 2).
    """
    single_line(value)
    encoded = Header(
        value, "utf-8" if not value.isascii() else "us-ascii", header_name=name, maxlinelen=76
    ).encode(linesep="\r\n")
    return f"{name}: {encoded}".encode("ascii") + CRLF


def address_header(name: str, display: str, address: str) -> bytes:
    """From/To/Reply-To: an address with an optional display name.

    A non-ASCII name becomes RFC 2047 encoded-words (each at most 75 octets,
    folded with CRLF); a non-ASCII address is kept as UTF-8 (it needs SMTPUTF8).
    """
    single_line(display)
    single_line(address)
    if not display:
        return f"{name}: {address}\r\n".encode()
    if display.isascii():
        if display.replace(" ", "").isalnum():
            return f"{name}: {display} <{address}>\r\n".encode()  # the common case, no quoting needed
        quoted = formataddr((display, "x@x"))[: -len(" <x@x>")]  # RFC 5322 quoting of specials
        return f"{name}: {quoted} <{address}>\r\n".encode()
    words = Header(display, "utf-8", header_name=name, maxlinelen=76).encode(linesep="\r\n")
    last_line = words.rsplit("\r\n", 1)[-1]
    gap = (
        " "
        if len(last_line) + len(address) + 3 + (len(name) + 2 if "\r\n" not in words else 0) <= 78
        else "\r\n "
    )
    return f"{name}: {words}{gap}<{address}>\r\n".encode()


def make_message_id(domain: str) -> str:
    """A globally unique Message-ID: <random@domain>."""
    return f"<{uuid.uuid4().hex}.{secrets.token_hex(4)}@{domain}>"


class MessageIds:
    """Message-IDs for outbox rows: ``<T.R@domain>``, R 128 random bits (32 hex digits) per row.

    A Message-ID is proof that a report is about a row (``delivery.bounces``), and every
    reader sees their own: so it carries nothing another reader could use (no edition, no
    subscriber id; only T, when the row was planned, is shared by the rows planned in the
    same transaction, to keep the unique index's inserts local). Planning writes rows in SQL
    and draws T and R there (``storage.planning``). ``edition_id`` is accepted for callers
    and written nowhere.
    """

    def __init__(self, domain: str, edition_id: int | None = None) -> None:
        self._suffix = f"@{domain}>"

    @property
    def affixes(self) -> tuple[str, str]:
        """What goes before and after T.R (for planning, which draws them in SQL)."""
        return "<", self._suffix


# Characters quoted-printable keeps as they are, spaces quoted (RFC 2045 6.7: 33-126 but "=").
_QP_UNSAFE = re.compile(r"[^!-<>-~]")
_VALUE_LINE = QP_LINE - 1  # a value's lines leave room for the soft break that follows them


def encode_value(value: str) -> bytes:
    """A per-recipient value, quoted-printable, for a place between two soft breaks.

    A value of only characters quoted-printable keeps as they are (an ASCII address, a
    token URL: the common case, three times per recipient) is just cut into lines, which
    is what the general encoder gives for it.
    """
    if _QP_UNSAFE.search(value) is None:
        return "=\r\n".join([value[i : i + _VALUE_LINE] for i in range(0, len(value), _VALUE_LINE)]).encode(
            "ascii"
        )
    return qp_encode(value, room_at_end=1, quote_spaces=True)


DOT_RE = re.compile(rb"(?m)^\.")


def dot_stuff(data: bytes) -> bytes:
    """Double every line-leading "." as SMTP DATA requires (RFC 5321 4.5.2)."""
    if not data.startswith(b".") and b"\n." not in data:
        return data  # the common case, without a regex pass
    return DOT_RE.sub(b"..", data)


@dataclass(frozen=True)
class _EncodedBody:
    """A QP-encoded body cut at its markers: literal pieces and the marker between each pair.

    Every spliced value starts a line (a soft break precedes it) and ends before
    one, so SMTP dot-stuffing can be done once here for the pieces (``stuffed``)
    and per recipient only over the values' few lines, never over a whole message.
    """

    pieces: tuple[bytes, ...]
    stuffed: tuple[bytes, ...]
    marks: tuple[str, ...]

    @classmethod
    def build(cls, text: str) -> _EncodedBody:
        parts = MARK_RE.split(text.replace("\r\n", "\n").replace("\n", "\r\n"))
        literals = parts[0::2]
        marks = tuple(parts[1::2])
        pieces = []
        for i, literal in enumerate(literals):
            more = i < len(literals) - 1
            encoded = qp_encode(literal.replace(ESCAPED_PERCENTS, "%%"), room_at_end=1 if more else 0)
            # Around each spliced value, a soft break keeps every line short, whatever the value.
            if i > 0:
                encoded = SOFT_BREAK + encoded
            if more and encoded and not encoded.endswith(CRLF):
                encoded += SOFT_BREAK
            pieces.append(encoded)
        return cls(tuple(pieces), tuple(dot_stuff(piece) for piece in pieces), marks)

    def splice_into(self, out: list[bytes], values: dict[str, bytes], *, dot_stuffed: bool = False) -> None:
        """Append the body's pieces with ``values`` between them to ``out`` (joined once by the caller).

        With ``dot_stuffed``, the values must be dot-stuffed already: a value spans several
        lines once quoted-printable wraps it, and any of them may start with "." (RFC 5321 4.5.2).
        """
        pieces = self.stuffed if dot_stuffed else self.pieces
        out.append(pieces[0])
        for mark, piece in zip(self.marks, pieces[1:], strict=True):
            out.append(values[mark])
            out.append(piece)


class PreparedMessage:
    """A variant's message with everything but the recipient's values already encoded."""

    def __init__(
        self,
        *,
        from_name: str,
        from_address: str,
        subject: str,
        text: str,
        html: str,
        list_id: str,
        reply_to: str = "",
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.boundary = "=_vsn_" + secrets.token_hex(12)
        head = [address_header("From", from_name, from_address), encode_header("Subject", subject)]
        if reply_to:
            head.append(address_header("Reply-To", "", reply_to))
        head.append(encode_header("List-Id", list_id))
        for name, value in extra_headers:
            head.append(encode_header(name, value))
        head.append(b"MIME-Version: 1.0\r\n")
        head.append(
            f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n'.encode("ascii")
        )
        self._fixed_headers = b"".join(head)
        part_head = (
            "--{b}\r\nContent-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding:"
            " quoted-printable\r\n\r\n"
        )
        self._text_head = ("\r\n" + part_head.format(b=self.boundary, kind="plain")).encode("ascii")
        self._html_head = ("\r\n" + part_head.format(b=self.boundary, kind="html")).encode("ascii")
        self._closing = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self._text = _EncodedBody.build(text)
        self._html = _EncodedBody.build(html)

    def for_recipient(
        self,
        *,
        to_address: str,
        to_name: str,
        message_id: str,
        date: datetime | str,
        unsubscribe_url: str,
        preferences_url: str,
        unsubscribe_mailto: str = "",
        dot_stuffed: bool = False,
    ) -> bytes:
        """The complete message bytes for one recipient (CRLF line ends).

        ``dot_stuffed``: lines starting with "." are doubled as SMTP DATA wants
        (RFC 5321 4.5.2), ready to write after the DATA command as they are.
        """
        single_line(message_id)
        single_line(unsubscribe_url)
        date_value = date if isinstance(date, str) else format_datetime(date)
        list_unsubscribe = f"<{unsubscribe_url}>" + (
            f", <mailto:{unsubscribe_mailto}>" if unsubscribe_mailto else ""
        )
        stuff = dot_stuff if dot_stuffed else _as_is
        text_values: dict[str, bytes] = {}
        html_values: dict[str, bytes] = {}
        for mark, value in (
            (RECIPIENT_MARK, to_address),
            (UNSUBSCRIBE_MARK, unsubscribe_url),
            (PREFERENCES_MARK, preferences_url),
        ):
            text_values[mark] = encoded = stuff(encode_value(value))
            escaped = html_lib.escape(value)
            # Addresses and token URLs rarely hold &, <, > or quotes: encode once then.
            html_values[mark] = encoded if escaped == value else stuff(encode_value(escaped))
        # One list, one join: the ~20 KB message is copied once, not once per part and again whole.
        out = [
            address_header("To", to_name, to_address),
            f"Date: {single_line(date_value)}\r\nMessage-ID: {message_id}\r\n".encode("ascii"),
            # ASCII by construction (a URL). Never folded: a URI cannot be broken, and
            # parsers differ on the leading space a fold before "<" leaves (RFC 5322
            # only asks lines under 998 octets; 78 is a recommendation).
            f"List-Unsubscribe: {list_unsubscribe}\r\n".encode("ascii"),
            f"List-Unsubscribe-Post: {ONE_CLICK}\r\n".encode("ascii"),
            self._fixed_headers,
            b"\r\nThis is a multi-part message in MIME format.\r\n",
            self._text_head,
        ]
        self._text.splice_into(out, text_values, dot_stuffed=dot_stuffed)
        out.append(self._html_head)
        self._html.splice_into(out, html_values, dot_stuffed=dot_stuffed)
        out.append(self._closing)
        return b"".join(out)


def _as_is(data: bytes) -> bytes:
    return data


def edition_message(
    mail: MailSettings, *, subject: str, text: str, html: str, edition_key: str
) -> PreparedMessage:
    """A digest variant's message as every reader of the edition gets it: a send's rows and a
    test send are built here alike (the test only passes its marked subject and key "test")."""
    return PreparedMessage(
        from_name=mail.from_name,
        from_address=mail.from_address,
        reply_to=mail.reply_to,
        subject=subject,
        text=text,
        html=html,
        list_id=mail.list_id,
        extra_headers=(("X-Newsletter-Edition", edition_key),),
    )


def envelope_sender(mail: MailSettings, token: str) -> str:
    """The VERP envelope sender ``bounces+TOKEN@DOMAIN`` (mail.bounce_domain, else the From domain):
    a bounce names what it is about by the token (an outbox row's; a test's names no row)."""
    return f"bounces+{token}@{mail.bounce_domain or mail.from_address.rsplit('@', 1)[1]}"


def transactional_message(
    *,
    from_name: str,
    from_address: str,
    to_address: str,
    to_name: str = "",
    subject: str,
    text: str,
    html: str,
    list_id: str,
    unsubscribe_url: str,
    message_id: str,
    date: datetime,
) -> bytes:
    """A one-off mail (confirmation, management link) in exactly the digest's wire form.

    The same builder as the digest: the same header order and List-Unsubscribe form,
    the same quoted-printable (lines <= 76), no headers inside the parts but their own.
    """
    return PreparedMessage(
        from_name=from_name, from_address=from_address, subject=subject, text=text, html=html, list_id=list_id
    ).for_recipient(
        to_address=to_address,
        to_name=to_name,
        message_id=message_id,
        date=date,
        unsubscribe_url=unsubscribe_url,
        preferences_url="",
    )
