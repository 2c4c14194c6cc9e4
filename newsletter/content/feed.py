"""Feed ingest: turn an RSS 2.0 or Atom feed into stored reports.

A feed is a URL (http/https, fetched with a timeout and, when the caller keeps
them, ETag / Last-Modified validators) or a local path, read in chunks up to a size
cap (``reports.max_feed_bytes``), so a runaway feed costs bounded memory. A document
that cannot be fetched or parsed raises FeedError naming the feed; nothing is stored.

Entries are judged one by one: an entry without a title, or without a link and an
id, is skipped and reported (``ParsedFeed.skipped``), the others are kept. Relative
links are resolved against ``xml:base`` and the feed's own URL. An entry without a
date takes the time it was first seen (``ParsedFeed.undated`` names them, so a stored
copy keeps its first date).
"""

from __future__ import annotations

import calendar
import html
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import feedparser
import httpx

from newsletter.errors import FeedError
from newsletter.models import FeedValidators, Report

log = logging.getLogger(__name__)
TAG_RE = re.compile(r"<[^>]*>")
SPACE_RE = re.compile(r"\s+")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MEMBERS_KEYS = ("vsn_membersonly", "membersonly", "members_only")
DEFAULT_MAX_BYTES = 10_000_000
CHUNK = 64 * 1024
ENTRY_HINT = (
    "The other entries were kept. Each entry needs a title, and a link or a guid;"
    " ask the publisher to fix this one."
)


class EntryProblem(FeedError):
    """One entry of a feed cannot become a report; the entry is skipped, the feed is kept."""

    default_hint = ENTRY_HINT


@dataclass(frozen=True)
class ParsedFeed:
    """The reports of a feed, and what was left out or guessed."""

    reports: tuple[Report, ...]
    skipped: tuple[str, ...] = ()  # one line per skipped entry: which one and why
    undated: frozenset[str] = frozenset()  # ids of reports dated by when they were first seen


@dataclass(frozen=True)
class FeedResult:
    reports: tuple[Report, ...]
    validators: FeedValidators
    not_modified: bool = False
    skipped: tuple[str, ...] = ()
    undated: frozenset[str] = field(default_factory=frozenset)


def plain_text(value: str, *, limit: int | None = None, markup: bool = True) -> str:
    """Entities decoded, whitespace (CR/LF included) collapsed, optionally capped.

    ``markup``: the value is HTML, so tags are stripped too; plain text keeps its '<' and '>'.
    """
    text = TAG_RE.sub(" ", value or "") if markup else (value or "")
    # Feeds often escape twice (&amp;quot;): decode until stable, at most twice.
    for _ in range(2):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = TAG_RE.sub(" ", decoded) if markup else decoded
    text = CONTROL_RE.sub("", SPACE_RE.sub(" ", text)).strip()
    if limit is not None and len(text) > limit:
        cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.;:")
        text = cut + "…"
    return text


def fetch_feed(
    source: str,
    *,
    timeout: float,
    validators: FeedValidators | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[bytes | None, FeedValidators]:
    """The raw feed bytes and the new validators; bytes are None when a conditional GET says nothing changed.

    Read in chunks; FeedError as soon as the feed is larger than ``max_bytes``.
    """
    if source.startswith(("http://", "https://")):
        headers = {"User-Agent": "video-surveillance-news-digest/0.1 (+feed ingest)"}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.modified:
            headers["If-Modified-Since"] = validators.modified
        try:
            with httpx.stream(
                "GET", source, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                if response.status_code == 304:
                    return None, validators or FeedValidators()
                if response.status_code >= 400:
                    raise FeedError(f"feed {source} could not be fetched: HTTP {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(source, max_bytes)
                body = _read_capped(response.iter_bytes(CHUNK), source, max_bytes)
                return body, FeedValidators(
                    response.headers.get("ETag"), response.headers.get("Last-Modified")
                )
        except httpx.HTTPError as exc:
            raise FeedError(f"feed {source} could not be fetched: {exc.__class__.__name__}: {exc}") from exc
    path = Path(source.removeprefix("file://"))
    try:
        with path.open("rb") as stream:
            return _read_capped(iter(lambda: stream.read(CHUNK), b""), source, max_bytes), FeedValidators()
    except OSError as exc:
        raise FeedError(f"feed {source} could not be read: {exc.strerror or exc}") from exc


def _read_capped(chunks: Any, source: str, max_bytes: int) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(source, max_bytes)
    return bytes(body)


def _too_large(source: str, max_bytes: int) -> FeedError:
    return FeedError(
        f"feed {source} is larger than reports.max_feed_bytes ({max_bytes:,} bytes);"
        " nothing was read from it",
        hint="Raise reports.max_feed_bytes (NEWSLETTER_REPORTS_MAX_FEED_BYTES) if the feed is really that"
        " large, or use a feed of recent items only.",
    )


def read_feed(
    data: bytes, *, source: str, teaser_length: int = 280, now: datetime | None = None
) -> ParsedFeed:
    """Reports from feed bytes, entry by entry; FeedError if the document is not a usable RSS/Atom feed
    or not one of its entries is usable.

    ``now`` dates entries that carry no date (default: the current time).
    """
    base = source if source.startswith(("http://", "https://")) else ""
    # feedparser resolves xml:base and relative links against the document's location.
    parsed = feedparser.parse(data, response_headers={"content-location": base} if base else None)
    reason = getattr(parsed, "bozo_exception", None)
    # We hand feedparser the location but not the server's Content-Type, so it always flags the
    # missing type (NonXMLContentType): that says nothing about the document. A parse error does.
    if parsed.bozo and not parsed.entries and not isinstance(reason, feedparser.NonXMLContentType):
        raise FeedError(
            f"feed {source} is not valid RSS or Atom: {plain_text(str(reason)) or 'unreadable document'}"
        )
    if not parsed.get("version") and not parsed.entries:
        raise FeedError(f"feed {source} is not an RSS or Atom feed (no channel and no entries)")
    if not parsed.entries:
        # A valid feed with nothing in it is not an error: it has no reports (yet).
        log.warning("feed %s: the feed has no items (a valid feed, with no reports in it yet)", source)
        return ParsedFeed(())
    seen_at = now or datetime.now(UTC)
    found: dict[str, Report] = {}
    skipped: list[str] = []
    undated: set[str] = set()
    for index, entry in enumerate(parsed.entries, start=1):
        try:
            report, dated = _report_from_entry(
                entry, source=source, base=base, index=index, teaser_length=teaser_length, seen_at=seen_at
            )
        except EntryProblem as problem:
            skipped.append(problem.message)
            continue
        found[report.id] = report  # a feed repeating an id: the last copy wins
        if dated:
            undated.discard(report.id)
        else:
            undated.add(report.id)
    if parsed.entries and not found:
        raise EntryProblem(
            f"feed {source}: none of its {len(parsed.entries)} entries is usable (first: {skipped[0]})",
            hint="Each entry needs a title, and a link or a guid; ask the publisher to fix the feed.",
        )
    return ParsedFeed(tuple(found.values()), tuple(skipped), frozenset(undated))


def parse_feed(
    data: bytes, *, source: str, teaser_length: int = 280, now: datetime | None = None
) -> list[Report]:
    """The usable reports of a feed (``read_feed`` without what was skipped)."""
    return list(read_feed(data, source=source, teaser_length=teaser_length, now=now).reports)


def load_reports(
    source: str,
    *,
    timeout: float,
    teaser_length: int,
    validators: FeedValidators | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    now: datetime | None = None,
) -> FeedResult:
    """Fetch and parse a feed in one step."""
    data, fresh = fetch_feed(source, timeout=timeout, validators=validators, max_bytes=max_bytes)
    if data is None:
        return FeedResult((), fresh, not_modified=True)
    parsed = read_feed(data, source=source, teaser_length=teaser_length, now=now)
    return FeedResult(parsed.reports, fresh, skipped=parsed.skipped, undated=parsed.undated)


def _is_markup(detail: Any) -> bool:
    """feedparser says whether a text construct is HTML; unknown counts as HTML (the safe side)."""
    kind = (detail or {}).get("type", "text/html") if hasattr(detail or {}, "get") else "text/html"
    return kind != "text/plain"


def _report_from_entry(
    entry: Any, *, source: str, base: str, index: int, teaser_length: int, seen_at: datetime
) -> tuple[Report, bool]:
    """(report, True if the entry carried its own date); EntryProblem naming the entry when it is unusable."""
    link = plain_text(entry.get("link", ""))
    if link and base and not link.startswith(("http://", "https://")):
        link = urljoin(base, link)  # a relative link feedparser could not resolve (no xml:base)
    ident = plain_text(entry.get("id", "")) or link
    title = plain_text(entry.get("title", ""), limit=300, markup=_is_markup(entry.get("title_detail")))
    if not ident:
        raise EntryProblem(
            f"feed {source}: entry {index} ({title or 'untitled'!r}) has neither a guid nor a link"
        )
    if not title:
        raise EntryProblem(f"feed {source}: entry {index} ({ident[:80]!r}) has no title")
    if not link.startswith(("http://", "https://")):
        raise EntryProblem(
            f"feed {source}: entry {index} ({title!r}) has no absolute http(s) link"
            + (f" ({link[:80]!r} is relative and the feed has no URL to resolve it against)" if link else "")
        )
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    published = datetime.fromtimestamp(calendar.timegm(stamp), tz=UTC) if stamp is not None else seen_at
    report = Report(
        id=ident,
        title=title,
        url=link,
        published=published,
        teaser=_teaser(entry, teaser_length),
        topics=_topics(entry),
        members_only=any(
            str(entry.get(key, "")).strip().lower() in ("true", "1", "yes") for key in MEMBERS_KEYS
        ),
    )
    return report, stamp is not None


def _teaser(entry: Any, teaser_length: int) -> str:
    """The entry's summary, or else the start of its content, as plain text."""
    source = entry.get("summary") or ""
    markup = _is_markup(entry.get("summary_detail"))
    if not source and entry.get("content"):
        source = entry.content[0].get("value", "")
        markup = _is_markup(entry.content[0])
    return plain_text(source, limit=teaser_length, markup=markup)


def _topics(entry: Any) -> tuple[str, ...]:
    """The entry's categories (term, or else label), in order, each once."""
    topics = dict.fromkeys(
        plain_text(t.get("term") or t.get("label") or "", limit=60)
        for t in entry.get("tags", [])
        if (t.get("term") or t.get("label"))
    )
    return tuple(t for t in topics if t)
