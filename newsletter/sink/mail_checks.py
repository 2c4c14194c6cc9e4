"""Checks of what one mail client alone never shows: links as they arrived, encoding limits,
layout on phones, spam score.

- ``body-links``: every unsubscribe link in the bodies equals the List-Unsubscribe URI. A
  link that lost a character on the way (an SMTP server drops a line-leading "." that the
  sender did not double) no longer verifies; the header, unwrapped, still does.
- ``mime-encoding``: encoded words at most 75 octets (RFC 2047 2), quoted-printable lines
  at most 76 (RFC 2045 6.7), body parts carrying only their Content-* headers.
- ``fluid-layout``: with its <style> blocks dropped (Gmail apps with other accounts do),
  nothing in the HTML is wider than a phone: no fixed width above 360 px unless capped
  by ``max-width: 100%``.
- ``spamassassin``: the SpamAssassin score (``spamassassin -L``, local rules only), when
  the sink runs with ``SINK_SPAMASSASSIN=1`` and spamassassin is installed; a few seconds
  a message, so it is opt-in.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from email import message_from_bytes
from functools import lru_cache
from html.parser import HTMLParser

from newsletter.sink.check_result import Check, Checkable, failed, passed, warned

ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
MAX_ENCODED_WORD = 75
MAX_QP_LINE = 76
PHONE_WIDTH = 360
_URL = re.compile(r"https?://[^\s<>\"')]+", re.IGNORECASE)


class _Links(HTMLParser):
    """(href, text) of every <a href>; the tags outside <style> with their width and style attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[list[str]] = []
        self.sized: list[tuple[str, dict[str, str]]] = []
        self._open: list[list[str]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "style":
            self._in_style = True
        if tag == "a" and "href" in a:
            link = [a["href"].strip(), ""]
            self.links.append(link)
            self._open.append(link)
        if "width" in a or "width" in a.get("style", "").lower():
            self.sized.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag == "a" and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            for link in self._open:
                link[1] += data


def _scan(html: str) -> _Links:
    scan = _Links()
    try:
        scan.feed(html)
        scan.close()
    except Exception:  # html.parser is lenient; a check must never crash the viewer
        pass
    return scan


def _header_https_uri(m: Checkable) -> str | None:
    value = " ".join(str(m.headers.get("List-Unsubscribe", "")).split())
    found = [u for u in re.findall(r"<([^<>]*)>", value) if u.lower().startswith("https://")]
    return found[0] if len(found) == 1 else None


def _text_unsubscribe_urls(text: str, prefix: str) -> list[str]:
    """URLs on a line that says "unsubscribe" (or on the next line, when it holds none),
    and any under ``prefix``."""
    lines = text.splitlines()
    urls = []
    for i, line in enumerate(lines):
        on_line = _URL.findall(line)
        if "unsubscribe" in line.lower():
            urls += on_line or (_URL.findall(lines[i + 1]) if i + 1 < len(lines) else [])
        urls += [u for u in on_line if u.startswith(prefix)]
    return urls


def check_body_links(m: Checkable) -> Check:
    name = "body-links"
    uri = _header_https_uri(m)
    if uri is None:
        return passed(name, "no single https List-Unsubscribe URI to compare with")
    prefix = uri.rsplit("/", 1)[0] + "/"
    found: dict[str, list[str]] = {}
    if m.html is not None:
        found["HTML"] = [
            href
            for href, text in _scan(m.html).links
            if href.startswith(prefix) or "unsubscribe" in text.lower()
        ]
    if m.text is not None:
        found["text"] = _text_unsubscribe_urls(m.text, prefix)
    for part, urls in found.items():
        wrong = [u for u in urls if u != uri]
        if wrong:
            return failed(
                name,
                f"the {part} part's unsubscribe link {wrong[0][:90]!r} differs from List-Unsubscribe"
                f" {uri[:90]!r}",
            )
    parts = [part for part, urls in found.items() if urls]
    if not parts:
        return passed(name, "no unsubscribe link in the bodies to compare")
    return passed(
        name,
        f"unsubscribe links in the {' and '.join(parts)} part{'s' if len(parts) > 1 else ''} equal"
        " List-Unsubscribe",
    )


def check_mime_encoding(m: Checkable) -> Check:
    name = "mime-encoding"
    head = m.raw.split(b"\r\n\r\n", 1)[0]
    long_words = [w for w in ENCODED_WORD.findall(head) if len(w) > MAX_ENCODED_WORD]
    if long_words:
        return failed(name, f"encoded word of {len(long_words[0])} octets in the header; RFC 2047 allows 75")
    parsed = message_from_bytes(m.raw)
    stray: list[str] = []
    for part in parsed.walk():
        if part is not parsed:
            stray += [key for key in part.keys() if not key.lower().startswith("content-")]
        if (
            part.is_multipart()
            or part.get("Content-Transfer-Encoding", "").strip().lower() != "quoted-printable"
        ):
            continue
        payload = part.get_payload(decode=False)
        longest = max((len(line.encode("utf-8")) for line in str(payload).splitlines()), default=0)
        if longest > MAX_QP_LINE:
            return failed(
                name,
                f"a {part.get_content_type()} quoted-printable line of {longest} octets; RFC 2045 allows 76",
            )
    if stray:
        return warned(name, f"{stray[0]} header inside a body part; parts carry only Content-* headers")
    return passed(name, "encoded words <= 75 octets, quoted-printable lines <= 76, no stray part headers")


_PX_WIDTH = re.compile(r"(?:^|;)\s*(min-width|width)\s*:\s*(\d+)px", re.IGNORECASE)
_CAPPED = re.compile(r"max-width\s*:\s*100%", re.IGNORECASE)


def _fixed_width(attrs: dict[str, str]) -> int:
    """The widest fixed pixel width the element insists on, 0 if it may shrink."""
    style = attrs.get("style", "")
    widths = [
        int(px)
        for prop, px in _PX_WIDTH.findall(style)
        if prop.lower() == "min-width" or not _CAPPED.search(style)
    ]
    attribute = attrs.get("width", "").strip().lower().removesuffix("px")
    if attribute.isdigit() and not _CAPPED.search(style):
        widths.append(int(attribute))
    return max(widths, default=0)


def check_fluid_layout(m: Checkable) -> Check:
    name = "fluid-layout"
    if m.html is None:
        return passed(name, "no HTML part")
    scan = _scan(m.html)
    wide = [(tag, w) for tag, attrs in scan.sized if (w := _fixed_width(attrs)) > PHONE_WIDTH]
    if wide:
        tag, width = wide[0]
        return failed(
            name,
            f"<{tag}> is a fixed {width} px: without @media (Gmail apps drop <style>) it shrinks on phones;"
            " use width=100% and max-width",
        )
    return passed(
        name, f"nothing wider than {PHONE_WIDTH} px without max-width: 100%, even with <style> dropped"
    )


# Rules about the sink's own delivery path (no Received header, no relay, no DNS): not the sender's doing.
SA_ENVIRONMENT_RULES = frozenset({"NO_RECEIVED", "NO_RELAYS", "HTML_MESSAGE", "MISSING_HEADERS"})
_SA_TOTAL = re.compile(r"\(\s*(-?[\d.]+) points?, ")
_SA_RULE = re.compile(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", re.M)


@lru_cache(maxsize=256)
def _spamassassin(digest: str, raw: bytes) -> tuple[float, tuple[tuple[str, float], ...]] | None:
    try:
        run = subprocess.run(
            ["spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    report = run.stdout.decode("utf-8", "replace").rsplit("Content analysis details:", 1)
    if len(report) != 2 or not (total := _SA_TOTAL.search(report[1])):
        return None
    rules = tuple((rule, float(points)) for points, rule in _SA_RULE.findall(report[1]))
    return float(total.group(1)), rules


def spamassassin_score(raw: bytes) -> tuple[float, tuple[tuple[str, float], ...]] | None:
    """(total score, ((rule, points), ...)) from ``spamassassin -L -t``; None when it cannot run."""
    if shutil.which("spamassassin") is None:
        return None
    return _spamassassin(hashlib.sha256(raw).hexdigest(), raw)


def check_spamassassin(m: Checkable) -> Check:
    name = "spamassassin"
    if os.environ.get("SINK_SPAMASSASSIN") != "1":
        return passed(name, "not scored (set SINK_SPAMASSASSIN=1 to run spamassassin -L on each message)")
    scored = spamassassin_score(m.raw)
    if scored is None:
        return passed(name, "not scored: spamassassin is not installed or did not answer")
    total, rules = scored
    own = [
        f"{rule} {points:+.1f}" for rule, points in rules if points > 0 and rule not in SA_ENVIRONMENT_RULES
    ]
    if total >= 5.0:
        return failed(name, f"score {total:.1f} (5.0 is spam): {', '.join(own) or 'no rule of ours'}")
    if own:
        return warned(name, f"score {total:.1f}: {', '.join(own)}")
    return passed(name, f"score {total:.1f}, no rule the sender controls")


MAIL_CHECKS: tuple[Callable[[Checkable], Check], ...] = (
    check_body_links,
    check_mime_encoding,
    check_fluid_layout,
    check_spamassassin,
)
MAIL_CHECK_NAMES: tuple[str, ...] = ("body-links", "mime-encoding", "fluid-layout", "spamassassin")
