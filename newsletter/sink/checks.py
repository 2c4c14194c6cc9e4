"""Deliverability checks run on every stored message (lazily, on first look).

Each check returns a `Check`: a name, a status ('pass', 'warn' or 'fail') and a one-line
reason. The rules follow what mailbox providers enforce (Gmail/Yahoo bulk-sender rules,
RFC 5321/5322, RFC 8058, CAN-SPAM); README "The local SMTP sink" lists them.

Postal address heuristic (CAN-SPAM asks for one in every message): a line of the text part
or of the HTML's visible text counts as an address if it has

* a US ZIP code (12345 or 12345-6789) after a two-letter state or a comma, or
* a UK postcode (SW1A 1AA), a Canadian one (K1A 0B1), or
* a 4-5 digit postal code followed by a capitalised town (10115 Berlin, 75008 Paris), or
* a house number followed by a street word (Street, St, Avenue, Ave, Road, Rd, Blvd, Lane,
  Drive, Way, Court, Place, Square, Suite, Straße/Strasse, rue ...), or "P.O. Box 123".

Found in both parts: pass; in one part only: warn (naming the part); in none: fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial
from html.parser import HTMLParser

from newsletter.sink.check_result import Check, Checkable, Status, failed, passed, warned
from newsletter.sink.dkim import DKIM_CHECK_NAMES, DKIM_CHECKS
from newsletter.sink.mail_checks import MAIL_CHECK_NAMES, MAIL_CHECKS

__all__ = ["CHECK_NAMES", "Check", "Status", "has_postal_address", "run_checks"]

# Gmail clips message bodies above about 102 KB; stay clear of it.
HTML_CLIP_BYTES = 102 * 1024
HTML_WARN_BYTES = 90 * 1024
MAX_LINE_OCTETS = 998


_pass, _warn, _fail = passed, warned, failed


# -- HTML scan ---------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "tr",
    "td",
    "th",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "section",
    "footer",
    "header",
    "address",
    "blockquote",
    "hr",
    "center",
}


@dataclass
class _Link:
    href: str
    text: str


class _HTMLScan(HTMLParser):
    """One pass over the HTML collecting what the checks need."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs_without_alt = 0
        self.imgs = 0
        self.stylesheet_links: list[str] = []
        self.styles: list[str] = []
        self.links: list[_Link] = []
        self.text_parts: list[str] = []
        self._in_style = False
        self._in_script = False
        self._link_stack: list[_Link] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "img":
            self.imgs += 1
            if "alt" not in a:
                self.imgs_without_alt += 1
        elif tag == "link" and "stylesheet" in a.get("rel", "").lower().split():
            self.stylesheet_links.append(a.get("href", ""))
        elif tag == "style":
            self._in_style = True
            self.styles.append("")
        elif tag == "script":
            self._in_script = True
        elif tag in ("a", "area") and "href" in a:
            link = _Link(a["href"].strip(), "")
            self.links.append(link)
            if tag == "a":
                self._link_stack.append(link)
        if tag in _BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag == "script":
            self._in_script = False
        elif tag == "a" and self._link_stack:
            self._link_stack.pop()
        if tag in _BLOCK_TAGS:
            self.text_parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles[-1] += data
            return
        if self._in_script:
            return
        self.text_parts.append(data)
        for link in self._link_stack:
            link.text += data

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def scan_html(html: str) -> _HTMLScan:
    scan = _HTMLScan()
    try:
        scan.feed(html)
        scan.close()
    except Exception:  # html.parser is lenient; never let a check crash the viewer
        pass
    return scan


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


_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
# Pseudo-classes and pseudo-elements cannot be written as style="" attributes.
_NOT_INLINABLE = re.compile(r":[a-z-]+|::")


def _top_level_css(css: str) -> list[tuple[str, str]]:
    """(prelude, body) of each top-level block or statement of a stylesheet."""
    css = _CSS_COMMENT.sub("", css)
    blocks: list[tuple[str, str]] = []
    depth = 0
    prelude_start = 0
    body_start = 0
    i = 0
    while i < len(css):
        c = css[i]
        if c == "{":
            if depth == 0:
                body_start = i + 1
                prelude = css[prelude_start:i]
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                blocks.append((prelude.strip(), css[body_start:i]))
                prelude_start = i + 1
            depth = max(depth, 0)
        elif c == ";" and depth == 0:
            blocks.append((css[prelude_start:i].strip(), ""))
            prelude_start = i + 1
        i += 1
    return [b for b in blocks if b[0] or b[1].strip()]


def check_stylesheets(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "external-css"
    if scan is None:
        return _pass(name, "no HTML part")
    if scan.stylesheet_links:
        return _fail(
            name, f"<link rel=stylesheet href={scan.stylesheet_links[0]!r}>: mail clients drop external CSS"
        )
    for css in scan.styles:
        for prelude, _ in _top_level_css(css):
            if prelude.lower().startswith("@import"):
                return _fail(name, f"{prelude[:60]!r} in <style>: mail clients drop external CSS")
    return _pass(name, "no external stylesheets")


def check_inlined_css(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "inlined-css"
    if scan is None:
        return _pass(name, "no HTML part")
    leftover = []
    for css in scan.styles:
        for prelude, body in _top_level_css(css):
            if prelude.startswith("@"):
                continue  # @media, @font-face ...: cannot be inlined, fine to keep
            if not body.strip():
                continue
            selectors = [s.strip() for s in prelude.split(",")]
            if all(_NOT_INLINABLE.search(s) for s in selectors):
                continue  # :hover and friends stay in <style> by necessity
            leftover.append(prelude)
    if leftover:
        return _warn(
            name,
            f"{len(leftover)} rule(s) in <style> could be inlined (e.g. {leftover[0][:40]!r}); "
            "Gmail and others ignore some <style> blocks",
        )
    return _pass(name, "no inlinable rules left in <style>")


def check_img_alt(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "img-alt"
    if scan is None or scan.imgs == 0:
        return _pass(name, "no images")
    if scan.imgs_without_alt:
        return _fail(name, f"{scan.imgs_without_alt} of {scan.imgs} <img> without an alt attribute")
    return _pass(name, f"all {scan.imgs} <img> have alt")


def check_links(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "absolute-links"
    if scan is None or not scan.links:
        return _pass(name, "no links")
    bad = [
        link.href
        for link in scan.links
        if not re.match(r"(https?://[^/\s]+|mailto:\S)", link.href, re.IGNORECASE)
    ]
    if bad:
        return _fail(name, f"{len(bad)} link(s) not absolute http(s)/mailto, e.g. href={bad[0]!r}")
    return _pass(name, f"all {len(scan.links)} links are absolute")


_URL = re.compile(r"https?://\S+", re.IGNORECASE)


def check_unsubscribe_link(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "unsubscribe-link"
    missing = []
    if m.text is not None:
        text_ok = any(
            "unsubscribe" in line.lower() and _URL.search(line) for line in _with_next(m.text.splitlines())
        )
        if not text_ok:
            missing.append("text")
    if scan is not None:
        html_ok = any(
            ("unsubscribe" in link.text.lower() or "unsubscribe" in link.href.lower())
            and re.match(r"https?://", link.href, re.IGNORECASE)
            for link in scan.links
        )
        if not html_ok:
            missing.append("HTML")
    if m.text is None and scan is None:
        return _fail(name, "no body to show an unsubscribe link in")
    if missing:
        return _fail(name, f"no visible unsubscribe link in the {' and '.join(missing)} part")
    return _pass(name, "unsubscribe link in " + ("both parts" if m.text is not None and scan else "the body"))


def _with_next(lines: list[str]) -> list[str]:
    """Each line joined with the next one: "Unsubscribe:" is often followed by the URL line."""
    return [line + " " + (lines[i + 1] if i + 1 < len(lines) else "") for i, line in enumerate(lines)]


_ADDRESS_PATTERNS = [
    re.compile(r"(\b[A-Z]{2}|,)\s+\d{5}(-\d{4})?\b"),  # US: "MA 02110" / ", 02110"
    re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b"),  # UK
    re.compile(r"\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"),  # Canada
    re.compile(r"\b\d{4,5}\s+[A-ZÄÖÜÉ][a-zäöüßéèà]+"),  # EU: "10115 Berlin"
    re.compile(
        r"\b\d+[A-Za-z]?\s+(\w+\s+){0,4}(Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?"
        r"|Lane|Ln\.?|Drive|Dr\.?|Way|Court|Ct\.?|Place|Pl\.?|Square|Sq\.?|Suite|Highway|Hwy\.?"
        r"|Parkway|Pkwy\.?)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b\w*(straße|strasse|str\.)\s+\d+", re.IGNORECASE),
    re.compile(r"\b\d+,?\s+(rue|avenue|boulevard|via|calle|plaza)\s+\w+", re.IGNORECASE),
    re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+", re.IGNORECASE),
]


def has_postal_address(text: str) -> bool:
    """The postal address heuristic of the module docstring, applied line by line."""
    return any(p.search(line) for line in text.splitlines() for p in _ADDRESS_PATTERNS)


def check_postal_address(m: Checkable, scan: _HTMLScan | None) -> Check:
    name = "postal-address"
    found = []
    if m.text is not None and has_postal_address(m.text):
        found.append("text")
    if scan is not None and has_postal_address(scan.text):
        found.append("HTML")
    parts = (["text"] if m.text is not None else []) + (["HTML"] if scan is not None else [])
    if not found:
        return _fail(
            name, "no postal address found (CAN-SPAM requires one); heuristic: street or postal code line"
        )
    if len(found) < len(parts):
        return _warn(name, f"postal address only in the {found[0]} part")
    return _pass(name, f"postal address in the {' and '.join(found)} part" + ("s" if len(found) > 1 else ""))


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
_HTML_CHECKS: list[Callable[[Checkable, _HTMLScan | None], Check]] = [
    check_stylesheets,
    check_inlined_css,
    check_img_alt,
    check_links,
    check_unsubscribe_link,
    check_postal_address,
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
    "external-css",
    "inlined-css",
    "img-alt",
    "absolute-links",
    "unsubscribe-link",
    "postal-address",
    *MAIL_CHECK_NAMES,
    *DKIM_CHECK_NAMES,
)


def run_checks(m: Checkable) -> list[Check]:
    """Every check, in a stable order (`CHECK_NAMES`). A crashing check reports 'fail'."""
    results: list[Check] = []
    scan = scan_html(m.html) if m.html is not None else None
    for check in _HEADER_CHECKS:
        results.append(_guard(check.__name__, partial(check, m)))
    for html_check in _HTML_CHECKS:
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
