"""The archive lists published digests and shows them without personal links."""

from __future__ import annotations

import re

from .helpers import Web


def test_archive_lists_sent_editions_and_shows_the_web_version(web: Web) -> None:
    assert "No digest has gone out yet" in web.client.get("/archive").text
    web.add("reader@example.org")
    web.service.runner.run(key="archive-1", fetch=False)
    digest = web.sink.wait_for(to="reader@example.org", timeout=5)[0].as_email()
    html_part = digest.get_body(preferencelist=("html",)).get_content()
    view_link = re.search(r'href="https://news.example.test(/archive/\d+)"', html_part)
    assert view_link, "the digest carries a View in browser link"

    listing = web.client.get("/archive")
    assert listing.status_code == 200 and f'href="{view_link.group(1)}"' in listing.text
    assert digest["Subject"] in listing.text

    page = web.client.get(view_link.group(1))
    assert page.status_code == 200
    assert "/unsubscribe/" not in page.text and "/preferences/" not in page.text
    assert "%%" not in page.text and "reader@example.org" not in page.text
    assert "https://news.example.test/manage" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' covers scripts


def test_unknown_or_unpublished_variants_are_404(web: Web) -> None:
    assert web.client.get("/archive/999999").status_code == 404
    assert web.client.get("/archive/not-a-number").status_code == 404
