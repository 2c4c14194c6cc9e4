"""Helpers for the core tests: reading the structure of a digest as it arrived at the sink.

Feeds, settings and services come from tests/factories.py; the delivery invariants and
the wire-format checks from tests/invariants.py. Everything here inspects real outputs.
"""

from __future__ import annotations

from email.message import EmailMessage
from html.parser import HTMLParser


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def header_names(raw: bytes) -> list[str]:
    """Names of the top-level header fields, read from the wire bytes (continuations skipped)."""
    names = []
    for line in header_block(raw).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        names.append(line.split(b":", 1)[0].decode("ascii"))
    return names


def parts(msg: EmailMessage) -> tuple[str, str]:
    """(text, html) of a multipart/alternative digest, asserting its structure."""
    assert msg.get_content_type() == "multipart/alternative"
    subparts = list(msg.iter_parts())
    assert [p.get_content_type() for p in subparts] == ["text/plain", "text/html"]
    text, html = (p.get_content() for p in subparts)
    return text, html


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def scan_html(html: str) -> TagCollector:
    collector = TagCollector()
    collector.feed(html)
    collector.close()
    return collector
