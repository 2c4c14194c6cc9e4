"""Checks of a message's HTML body: stylesheets, inlined CSS, image alt text, absolute links,
the unsubscribe link, and a postal address (in the HTML or the text part).

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
from html.parser import HTMLParser

from newsletter.sink.check_result import Check, Checkable, failed, passed, warned

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


HTML_CHECKS: list[Callable[[Checkable, _HTMLScan | None], Check]] = [
    check_stylesheets,
    check_inlined_css,
    check_img_alt,
    check_links,
    check_unsubscribe_link,
    check_postal_address,
]
HTML_CHECK_NAMES: tuple[str, ...] = (
    "external-css",
    "inlined-css",
    "img-alt",
    "absolute-links",
    "unsubscribe-link",
    "postal-address",
)
