"""What a reader sees first: the subject, the preview line, "View in browser", the text part, the archive."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from newsletter.content.render import DigestRenderer
from newsletter.service import Service
from newsletter.web.app import create_app
from newsletter.web.ratelimit import Limit, RateLimits
from tests.factories import Item, utc, write_rss
from tests.mail.helpers import parts, report

LONG_TITLES = [
    f"Hikvision {n}: the first US city bans the Chinese manufacturer after the federal government did,"
    " in detail"
    for n in range(10)
]


def rendered(service: Service, titles: list[str], *, teaser: str = "A teaser.") -> Any:
    reports = [report(title, slug=f"r{n}", teaser=teaser, n=n) for n, title in enumerate(titles)]
    return DigestRenderer(service.settings).render(
        reports, archive_url=service.settings.site.base_url + "/archive/7"
    )


def test_subject_leads_with_the_headline_near_60_characters_plus_the_count(mail_service: Service) -> None:
    """Regression: the subject started with the From name and ran 70-130 characters,
    cutting the headline on phones."""
    digest = rendered(mail_service, LONG_TITLES)
    assert digest.subject.startswith(LONG_TITLES[0][:40]), digest.subject
    assert not digest.subject.startswith(mail_service.settings.site.name)
    assert digest.subject.endswith(" and 9 more")
    assert len(digest.subject) <= 60 + len(" and 9 more"), (len(digest.subject), digest.subject)
    single = rendered(mail_service, ["A short headline"])
    assert single.subject == "A short headline"


def test_the_preview_line_carries_the_other_headlines_and_view_in_browser_is_near_the_top(
    mail_service: Service,
) -> None:
    """Regression: "View in browser" was only in the footer; the preheader repeated the subject's headline."""
    digest = rendered(mail_service, LONG_TITLES)
    html = digest.html
    first_report = html.index(LONG_TITLES[0])
    view = html.index(">View in browser<")
    assert view < first_report, "View in browser comes before the first report"
    top = re.sub(r"<[^>]+>", " ", html[html.index("<body") : view])
    assert LONG_TITLES[1] in top and LONG_TITLES[0] not in top  # the preview line: what the subject left out
    text_view = digest.text.index("View in browser:")
    assert text_view < digest.text.index(LONG_TITLES[0][:30])


def test_the_preview_line_has_no_hidden_low_contrast_text(mail_service: Service) -> None:
    """Regression: the preheader was hidden text in the background colour (SpamAssassin
    HTML_FONT_LOW_CONTRAST)."""
    html = rendered(mail_service, LONG_TITLES).html
    assert (
        "display:none" not in html.replace(" ", "")
        and "opacity" not in html
        and "font-size:1px" not in html.replace(" ", "")
    )


def test_plain_text_is_wrapped_at_76_columns_with_links_on_their_own_lines(mail_service: Service) -> None:
    """Regression: teasers in the text part were unwrapped 150-character lines."""
    teaser = (
        "Just days after a ban of Hikvision was signed into law for the US federal government,"
        " the first US city has followed, and more will."
    )
    text = rendered(mail_service, LONG_TITLES[:3], teaser=teaser).text
    for line in text.splitlines():
        urls = re.findall(r"https?://\S+|%%[A-Z_]+%%", line)
        if urls:
            assert line.strip() == urls[0], f"a link shares its line: {line!r}"
        else:
            assert len(line) <= 76, f"{len(line)} columns: {line!r}"
    assert "followed, and more will." in text


def test_the_archive_lists_one_public_page_per_edition_without_personal_wording(
    make_service: Callable[..., Service], sink: Any, tmp_path: Path
) -> None:
    """Regression: the public archive said "You are receiving this because ..." and listed each variant of one
    edition as a separate digest."""
    feed = write_rss(
        tmp_path / "feed.xml",
        [
            Item("Axis tested", "axis", utc(2026, 11, 20, 9), topics=("Testing",)),
            Item("Dahua banned", "dahua", utc(2026, 11, 20, 10), topics=("Government",)),
        ],
    )
    service = make_service(
        NEWSLETTER_REPORTS_FEED=str(feed), NEWSLETTER_SITE_BASE_URL="https://news.example.test"
    )
    testing, _ = service.store.subscribers.add_subscriber(email="testing@example.org", topics=("Testing",))
    service.store.subscribers.add_subscriber(email="all@example.org")
    service.runner.run(key="two-variants", as_of=utc(2026, 11, 22))
    assert len(service.store.editions.list_variants(service.store.editions.list_editions()[0].id)) == 2
    client = TestClient(
        create_app(service, limits=RateLimits(per_client=Limit(1000, 600), per_target=Limit(1000, 3600)))
    )
    with client:
        listing = client.get("/archive").text
        pages = re.findall(r'href="(/archive/\d+)"', listing)
        assert len(pages) == 1, listing
        page = client.get(pages[0]).text
    assert "Axis tested" in page and "Dahua banned" in page  # the edition's fullest cut
    for personal in (
        "receiving this",
        "because",
        "you subscribed",
        "testing@example.org",
        "all@example.org",
        "/unsubscribe/",
        "/preferences/",
        "View in browser",
    ):
        assert personal not in page, personal
    assert "https://news.example.test/manage" in page


def test_confirmation_and_manage_text_parts_keep_to_76_columns_with_links_on_their_own_lines(
    mails: dict[str, bytes],
) -> None:
    for kind in ("confirm", "manage"):
        text, _ = parts(mails[kind])
        for line in text.splitlines():
            urls = re.findall(r"https?://\S+", line)
            assert not urls or line.strip() == urls[0], f"{kind}: a link shares its line: {line!r}"
            assert urls or len(line) <= 76, f"{kind}: {len(line)} columns: {line!r}"
