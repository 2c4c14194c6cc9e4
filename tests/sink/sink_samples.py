"""Sample messages for the sink tests: one that passes every check, and ways to break it."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

GOOD_TEXT = """\
New this week: Axis launches a new camera line.

Read it: https://news.example.com/reports/axis-cameras

--
Video Surveillance News, 100 Main Street, Springfield, MA 01103
Unsubscribe: https://news.example.com/u/tok123
"""

GOOD_HTML = """\
<!doctype html>
<html><head><style>@media (max-width: 600px) { .col { width: 100% !important; } }
a:hover { color: red; }</style></head>
<body>
<p style="font-family: sans-serif">New this week:
<a href="https://news.example.com/reports/axis-cameras">Axis launches a new camera line</a></p>
<img src="https://news.example.com/logo.png" alt="Video Surveillance News" width="120">
<p>Video Surveillance News<br>100 Main Street<br>Springfield, MA 01103</p>
<p><a href="https://news.example.com/u/tok123">Unsubscribe</a> |
<a href="mailto:editor@news.example.com">Write to us</a></p>
</body></html>
"""


def build(
    *,
    to: str = "reader@example.org",
    sender: str = "news@news.example.com",
    subject: str = "Video Surveillance News: this week",
    text: str | None = GOOD_TEXT,
    html: str | None = GOOD_HTML,
    headers: dict[str, str | None] | None = None,
) -> EmailMessage:
    """A digest-like message that passes every check; `headers` overrides (None removes)."""
    msg = EmailMessage(policy=SMTP.clone(max_line_length=76))  # quoted-printable lines <= 76 (RFC 2045)
    base: dict[str, str | None] = {
        "From": f"Video Surveillance News <{sender}>",
        "To": to,
        "Subject": subject,
        "Date": "Mon, 05 Feb 2024 08:00:00 +0000",
        "Message-ID": "<digest-1.reader@news.example.com>",
        "List-Unsubscribe": "<https://news.example.com/u/tok123>, <mailto:unsub@news.example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    base.update(headers or {})
    for name, value in base.items():
        if value is not None:
            msg[name] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
            del msg.get_payload()[1][
                "MIME-Version"
            ]  # the stdlib adds one to the part; it belongs at the top only
    return msg


def wire(msg: EmailMessage) -> bytes:
    """The bytes as a correct sender puts them on the wire (CRLF line ends)."""
    return msg.as_bytes(policy=SMTP)
