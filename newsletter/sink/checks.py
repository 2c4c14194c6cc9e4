"""Deliverability checks run on every stored message (lazily, on first look).

Each check returns a `Check`: a name, a status ('pass', 'warn' or 'fail') and a one-line
reason. The rules follow what mailbox providers enforce (Gmail/Yahoo bulk-sender rules,
RFC 5321/5322, RFC 8058, CAN-SPAM); README "The local SMTP sink" lists them.

The header and size checks live here; the checks of the HTML body in `html_checks`, the
MIME and link checks in `mail_checks`, DKIM in `dkim`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial

from newsletter.sink.check_result import Check, Checkable, Status, failed, passed, warned
from newsletter.sink.dkim import DKIM_CHECK_NAMES, DKIM_CHECKS
from newsletter.sink.html_checks import HTML_CHECK_NAMES, HTML_CHECKS, has_postal_address, scan_html
from newsletter.sink.mail_checks import MAIL_CHECK_NAMES, MAIL_CHECKS

__all__ = ["CHECK_NAMES", "Check", "Status", "has_postal_address", "run_checks"]

# Gmail clips message bodies above about 102 KB; stay clear of it.
HTML_CLIP_BYTES = 102 * 1024
HTML_WARN_BYTES = 90 * 1024
MAX_LINE_OCTETS = 998


_pass, _warn, _fail = passed, warned, failed


# -- individual checks -------------------------------------------------------------------

_URI_ITEM = re.compile(r"\s*<([^<>]*)>\s*")


def check_list_unsubscribe(m: Checkable) -> Check:
    name = "list-unsubscribe"
    values = m.headers.get_all("List-Unsubscribe") or []
    if not values:
        return _fail(name, "no List-Unsubscribe header (Gmail/Yahoo require one for bulk mail)")
    if len(values) > 1:
        return _fail(name, f"{len(values)} List-Unsubscribe headers; send exactly one")
    value = re.sub(r"\r?\n[ \t]", " ", str(values[0])).strip()
    uris = []
    for item in value.split(","):
        match = _URI_ITEM.fullmatch(item)
        if not match:
            return _fail(name, f"item {item.strip()!r} is not enclosed in <angle brackets>")
        uris.append(match.group(1).strip())
    https = [u for u in uris if u.lower().startswith("https://")]
    mailto = [u for u in uris if u.lower().startswith("mailto:")]
    other = [u for u in uris if u not in https and u not in mailto]
    if other:
        return _fail(name, f"URI {other[0]!r} is neither https: nor mailto:")
    if len(https) != 1:
        return _fail(name, f"{len(https)} https URIs; exactly one is required for one-click")
    if len(mailto) > 1:
        return _fail(name, f"{len(mailto)} mailto URIs; at most one is allowed")
    return _pass(name, "one https URI" + (" and one mailto URI" if mailto else ""))


def check_list_unsubscribe_post(m: Checkable) -> Check:
    name = "list-unsubscribe-post"
    values = m.headers.get_all("List-Unsubscribe-Post") or []
    if not values:
        return _fail(name, "no List-Unsubscribe-Post header (RFC 8058 one-click needs it)")
    if len(values) > 1:
        return _fail(name, f"{len(values)} List-Unsubscribe-Post headers; send exactly one")
    value = str(values[0]).strip()
    if value != "List-Unsubscribe=One-Click":
        return _fail(name, f"value is {value!r}; it must be exactly 'List-Unsubscribe=One-Click'")
    return _pass(name, "List-Unsubscribe=One-Click")


def check_text_alternative(m: Checkable) -> Check:
    name = "text-alternative"
    if m.text is None:
        if m.html is None:
            return _fail(name, "no text/plain and no text/html body")
        return _fail(name, "HTML only: add a text/plain alternative (spam filters penalise its absence)")
    if not m.text.strip():
        return _warn(name, "the text/plain part is empty")
    return _pass(name, "text/plain part present" + (" alongside HTML" if m.html is not None else ""))


def check_html_size(m: Checkable) -> Check:
    name = "html-size"
    if m.html is None:
        return _pass(name, "no HTML part")
    size = len(m.html.encode("utf-8"))
    kb = f"{size / 1024:.1f} KB"
    if size > HTML_CLIP_BYTES:
        return _fail(name, f"HTML is {kb}; Gmail clips above ~102 KB")
    if size > HTML_WARN_BYTES:
        return _warn(name, f"HTML is {kb}; close to Gmail's ~102 KB clipping limit")
    return _pass(name, f"HTML is {kb} (Gmail clips above ~102 KB)")


def check_line_endings(m: Checkable) -> Check:
    name = "line-endings"
    raw = m.raw
    lines = raw.split(b"\r\n")
    for number, line in enumerate(lines, 1):
        if b"\n" in line:
            return _fail(name, f"bare LF on line {number}; SMTP requires CRLF line ends")
        if b"\r" in line:
            return _fail(name, f"bare CR on line {number}; SMTP requires CRLF line ends")
    longest = max((len(line) for line in lines), default=0)
    if longest > MAX_LINE_OCTETS:
        number = next(i for i, line in enumerate(lines, 1) if len(line) == longest)
        return _fail(name, f"line {number} is {longest} octets; the limit is 998 (use quoted-printable)")
    return _pass(name, f"CRLF only, longest line {longest} octets")


def check_from(m: Checkable) -> Check:
    name = "from-header"
    values = m.headers.get_all("From") or []
    if len(values) != 1:
        return _fail(name, f"{len(values)} From headers; exactly one is required")
    try:
        addresses = [a for _, a in getaddresses([str(values[0])]) if a]
    except Exception:
        addresses = []
    if not addresses or not all(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a) for a in addresses):
        return _fail(name, f"From {str(values[0])!r} has no valid address")
    return _pass(name, f"From {addresses[0]}")


def check_date(m: Checkable) -> Check:
    name = "date-header"
    values = m.headers.get_all("Date") or []
    if len(values) != 1:
        return _fail(name, f"{len(values)} Date headers; exactly one is required")
    text = str(values[0])
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None:
        return _fail(name, f"Date {text!r} is not an RFC 5322 date")
    if parsed.tzinfo is None:
        return _warn(name, f"Date {text!r} has no time zone")
    return _pass(name, f"Date {parsed.isoformat()}")


_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


def check_message_id(m: Checkable) -> Check:
    name = "message-id"
    values = m.headers.get_all("Message-ID") or []
    if len(values) != 1:
        return _fail(name, f"{len(values)} Message-ID headers; exactly one is required")
    text = str(values[0]).strip()
    if not _MESSAGE_ID.fullmatch(text):
        return _fail(name, f"Message-ID {text!r} is not of the form <left@right>")
    return _pass(name, f"Message-ID {text}")


_HEADER_CHECKS: list[Callable[[Checkable], Check]] = [
    check_list_unsubscribe,
    check_list_unsubscribe_post,
    check_from,
    check_date,
    check_message_id,
    check_line_endings,
    check_text_alternative,
    check_html_size,
]
CHECK_NAMES: tuple[str, ...] = (
    "list-unsubscribe",
    "list-unsubscribe-post",
    "from-header",
    "date-header",
    "message-id",
    "line-endings",
    "text-alternative",
    "html-size",
    *HTML_CHECK_NAMES,
    *MAIL_CHECK_NAMES,
    *DKIM_CHECK_NAMES,
)


def run_checks(m: Checkable) -> list[Check]:
    """Every check, in a stable order (`CHECK_NAMES`). A crashing check reports 'fail'."""
    results: list[Check] = []
    scan = scan_html(m.html) if m.html is not None else None
    for check in _HEADER_CHECKS:
        results.append(_guard(check.__name__, partial(check, m)))
    for html_check in HTML_CHECKS:  # newsletter.sink.html_checks
        results.append(_guard(html_check.__name__, partial(html_check, m, scan)))
    for mail_check in MAIL_CHECKS:  # newsletter.sink.mail_checks
        results.append(_guard(mail_check.__name__, partial(mail_check, m)))
    for dkim_check in DKIM_CHECKS:  # newsletter.sink.dkim
        results.append(_guard(dkim_check.__name__, partial(dkim_check, m)))
    return results


def _guard(func_name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # a malformed message must still get a checks panel
        name = func_name.removeprefix("check_").replace("_", "-")
        return _fail(name, f"could not check: {type(exc).__name__}: {exc}")
