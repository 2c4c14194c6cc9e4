"""Feed ingest: turn an RSS 2.0 or Atom feed into stored reports.

A feed is a URL (http/https, fetched with a timeout and, when the caller keeps
them, ETag / Last-Modified validators) or a local path. Anything that cannot be
fetched or parsed raises FeedError naming the feed; nothing is stored then.
"""

from __future__ import annotations

import calendar
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx

from newsletter.errors import FeedError
from newsletter.models import FeedValidators, Report

TAG_RE = re.compile(r"<[^>]*>")
SPACE_RE = re.compile(r"\s+")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MEMBERS_KEYS = ("vsn_membersonly", "membersonly", "members_only")


@dataclass(frozen=True)
class FeedResult:
    reports: tuple[Report, ...]
    validators: FeedValidators
    not_modified: bool = False


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


def fetch_feed(source: str, *, timeout: float, validators: FeedValidators | None = None) -> tuple[bytes | None, FeedValidators]:
    """The raw feed bytes and the new validators; bytes are None when a conditional GET says nothing changed."""
    if source.startswith(("http://", "https://")):
        headers = {"User-Agent": "video-surveillance-news-digest/0.1 (+feed ingest)"}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.modified:
            headers["If-Modified-Since"] = validators.modified
        try:
            response = httpx.get(source, headers=headers, timeout=timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise FeedError(f"feed {source} could not be fetched: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code == 304:
            return None, validators or FeedValidators()
        if response.status_code >= 400:
            raise FeedError(f"feed {source} could not be fetched: HTTP {response.status_code}")
        return response.content, FeedValidators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
    path = Path(source.removeprefix("file://"))
    try:
        return path.read_bytes(), FeedValidators()
    except OSError as exc:
        raise FeedError(f"feed {source} could not be read: {exc.strerror or exc}") from exc


def parse_feed(data: bytes, *, source: str, teaser_length: int = 280) -> list[Report]:
    """Reports from feed bytes; FeedError if the document is not a usable RSS/Atom feed."""
    parsed = feedparser.parse(data)
    if parsed.bozo and not parsed.entries:
        reason = getattr(parsed, "bozo_exception", None)
        raise FeedError(f"feed {source} is not valid RSS or Atom: {plain_text(str(reason)) or 'unreadable document'}")
    if not parsed.get("version") and not parsed.entries:
        raise FeedError(f"feed {source} is not an RSS or Atom feed (no channel and no entries)")
    found: dict[str, Report] = {}
    for index, entry in enumerate(parsed.entries, start=1):
        report = _report_from_entry(entry, source=source, index=index, teaser_length=teaser_length)
        found[report.id] = report  # a feed repeating an id: the last copy wins
    return list(found.values())


def load_reports(source: str, *, timeout: float, teaser_length: int, validators: FeedValidators | None = None) -> FeedResult:
    """Fetch and parse a feed in one step."""
    data, fresh = fetch_feed(source, timeout=timeout, validators=validators)
    if data is None:
        return FeedResult((), fresh, not_modified=True)
    return FeedResult(tuple(parse_feed(data, source=source, teaser_length=teaser_length)), fresh)


def _is_markup(detail: Any) -> bool:
    """feedparser says whether a text construct is HTML; unknown counts as HTML (the safe side)."""
    kind = (detail or {}).get("type", "text/html") if hasattr(detail or {}, "get") else "text/html"
    return kind != "text/plain"


def _report_from_entry(entry: Any, *, source: str, index: int, teaser_length: int) -> Report:
    link = plain_text(entry.get("link", ""))
    ident = plain_text(entry.get("id", "")) or link
    title = plain_text(entry.get("title", ""), limit=300, markup=_is_markup(entry.get("title_detail")))
    if not ident:
        raise FeedError(f"feed {source}: entry {index} ({title or 'untitled'!r}) has neither a guid nor a link")
    if not title:
        raise FeedError(f"feed {source}: entry {index} has no title")
    if not link.startswith(("http://", "https://")):
        raise FeedError(f"feed {source}: entry {index} ({title!r}) has no absolute http(s) link")
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if stamp is None:
        raise FeedError(f"feed {source}: entry {index} ({title!r}) has no publication date")
    published = datetime.fromtimestamp(calendar.timegm(stamp), tz=UTC)
    teaser_source = entry.get("summary") or ""
    teaser_markup = _is_markup(entry.get("summary_detail"))
    if not teaser_source and entry.get("content"):
        teaser_source = entry.content[0].get("value", "")
        teaser_markup = _is_markup(entry.content[0])
    topics = tuple(dict.fromkeys(plain_text(t.get("term") or t.get("label") or "", limit=60) for t in entry.get("tags", []) if (t.get("term") or t.get("label"))))
    members_only = any(str(entry.get(key, "")).strip().lower() in ("true", "1", "yes") for key in MEMBERS_KEYS)
    return Report(
        id=ident,
        title=title,
        url=link,
        published=published,
        teaser=plain_text(teaser_source, limit=teaser_length, markup=teaser_markup),
        topics=tuple(t for t in topics if t),
        members_only=members_only,
    )
