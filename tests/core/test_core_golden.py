"""Golden files for the rendered digest and for a whole message as it arrived at the sink.

Rewrite them after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/core/test_core_golden.py
then review the diff. Render output is compared byte for byte; in the full message only the
Message-ID, the Date and the MIME boundary (random per message) are normalised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from newsletter.content.render import DigestRenderer
from newsletter.models import Report
from newsletter.subscriptions import add_subscriber
from tests.factories import Item, build_settings, utc, write_rss
from tests.invariants import assert_wire_format

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

REPORTS = (
    Report(
        id="vsn-first-us-city-bans-hikvision",
        title="First US City Bans Hikvision",
        url="https://example.com/reports/first-us-city-bans-hikvision",
        published=utc(2018, 8, 20, 14),
        teaser="Just days after a ban of Hikvision was signed into law for the US federal government,"
        " the first US city has followed.",
        topics=("Government", "China"),
    ),
    Report(
        id="vsn-axis-first-ir-ptz-tested",
        title="Axis First IR PTZ Tested (Q6125-LE)",
        url="https://example.com/reports/axis-first-ir-ptz-tested-q6125-le",
        published=utc(2018, 8, 17, 13),
        teaser="Axis is very late in releasing IR PTZs. While competitors have offered them for years,"
        " Axis has just released theirs.",
        topics=("Testing",),
        members_only=True,
    ),
    Report(
        id="vsn-dahua-cybersecurity",
        title="Dahua & “Cybersecurity” – Überblick, 5 <6 “Tested”",
        url="https://example.com/reports/dahua-cybersecurity",
        published=utc(2018, 8, 16, 12),
        teaser='Markup & quotes: "5 < 6" stays text; ümlauts and – dashes too.',
        topics=("Cybersecurity", "China"),
    ),
)


def settings_for_golden(tmp_path: Path):
    return build_settings(tmp_path, NEWSLETTER_SITE_BASE_URL="https://news.example.com")


def compare(name: str, actual: bytes) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        return
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    expected = path.read_bytes()
    if actual != expected:
        import difflib

        diff = "\n".join(
            difflib.unified_diff(
                expected.decode("utf-8", "replace").splitlines(),
                actual.decode("utf-8", "replace").splitlines(),
                "golden/" + name,
                "rendered",
                lineterm="",
                n=2,
            )
        )
        pytest.fail(
            f"{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it after review):\n{diff[:6000]}"
        )


def test_rendered_digest_matches_golden(tmp_path):
    settings = settings_for_golden(tmp_path)
    digest = DigestRenderer(settings).render(REPORTS, archive_url="https://news.example.com/archive/1")
    assert digest.more_count == 0 and digest.reports == REPORTS
    assert (
        digest.subject == "First US City Bans Hikvision and 2 more"
    )  # the headline first (the From name says who)
    compare("digest.html", digest.html.encode("utf-8"))
    compare("digest.txt", digest.text.encode("utf-8"))


def test_rendering_is_deterministic(tmp_path):
    settings = settings_for_golden(tmp_path)
    one = DigestRenderer(settings).render(REPORTS, archive_url="https://news.example.com/archive/1")
    two = DigestRenderer(settings).render(REPORTS, archive_url="https://news.example.com/archive/1")
    assert one == two


def normalise_message(raw: bytes) -> bytes:
    boundary = re.search(rb'boundary="([^"]+)"', raw).group(1)
    out = raw.replace(boundary, b"BOUNDARY")
    out = re.sub(rb"(?m)^Message-ID: <[^>]+>\r$", b"Message-ID: <MESSAGE-ID>\r", out)
    out = re.sub(rb"(?m)^Date: [^\r\n]+\r$", b"Date: DATE\r", out)
    return out


def test_delivered_message_matches_golden(make_service, sink, tmp_path):
    items = [
        Item(
            r.title,
            r.url.rsplit("/", 1)[1],
            r.published,
            teaser=r.teaser,
            topics=r.topics,
            guid=r.id,
            extra="<membersonly>true</membersonly>" if r.members_only else "",
        )
        for r in REPORTS
    ]
    feed = write_rss(tmp_path / "feed.xml", items)
    service = make_service(
        NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_SITE_BASE_URL="https://news.example.com"
    )
    add_subscriber(service.store, "jose.nunez@example.net", name="José Núñez")
    result = service.runner.run(key="golden", as_of=utc(2018, 8, 22))
    (m,) = sink.messages()
    assert_wire_format(m.raw)
    row = service.store.outbox.list_deliveries(result.edition.id)[0]
    assert f"Message-ID: {row.message_id}\r\n".encode() in m.raw
    normalised = normalise_message(m.raw)
    assert (
        b"BOUNDARY" in normalised
        and b"Message-ID: <MESSAGE-ID>\r\n" in normalised
        and b"Date: DATE\r\n" in normalised
    )
    compare("message.eml", normalised)
