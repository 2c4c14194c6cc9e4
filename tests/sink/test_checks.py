"""Each deliverability check: one message that passes it and one that fails (or warns)."""

from __future__ import annotations

import pytest
from sink_samples import GOOD_HTML, GOOD_TEXT, build, wire

from newsletter.sink.checks import CHECK_NAMES, has_postal_address
from newsletter.sink.message import StoredMessage


def status(raw: bytes, name: str) -> tuple[str, str]:
    checks = {c.name: c for c in StoredMessage.from_bytes(raw).checks}
    assert set(checks) == set(CHECK_NAMES)
    return checks[name].status, checks[name].reason


def test_good_message_passes_every_check() -> None:
    checks = StoredMessage.from_bytes(wire(build())).checks
    assert [c.name for c in checks] == list(CHECK_NAMES)
    assert {c.name: c.status for c in checks} == dict.fromkeys(CHECK_NAMES, "pass"), checks
    assert all("\n" not in c.reason and c.reason for c in checks)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://news.example.com/u/1", "fail"),  # no angle brackets
        ("<mailto:unsub@news.example.com>", "fail"),  # no https URI
        ("<https://a.example/u/1>, <https://b.example/u/1>", "fail"),  # two https
        ("<http://news.example.com/u/1>", "fail"),  # plain http
        ("<https://a.example/u/1>, <mailto:a@x.example>, <mailto:b@x.example>", "fail"),
        ("<https://news.example.com/u/1>", "pass"),
    ],
)
def test_list_unsubscribe(value: str, expected: str) -> None:
    got, reason = status(wire(build(headers={"List-Unsubscribe": value})), "list-unsubscribe")
    assert got == expected, reason


def test_list_unsubscribe_missing() -> None:
    assert status(wire(build(headers={"List-Unsubscribe": None})), "list-unsubscribe")[0] == "fail"


@pytest.mark.parametrize(
    "value, expected",
    [("List-Unsubscribe=One-Click", "pass"), ("List-Unsubscribe=one-click", "fail"), (None, "fail")],
)
def test_list_unsubscribe_post(value: str | None, expected: str) -> None:
    got, reason = status(wire(build(headers={"List-Unsubscribe-Post": value})), "list-unsubscribe-post")
    assert got == expected, reason


def test_text_alternative() -> None:
    assert status(wire(build()), "text-alternative")[0] == "pass"
    got, reason = status(wire(build(text=None)), "text-alternative")
    assert got == "fail" and "text/plain" in reason


def test_html_size_limits() -> None:
    padding = "<p>" + "x" * 1000 + "</p>\n"
    assert status(wire(build()), "html-size")[0] == "pass"
    assert status(wire(build(html=GOOD_HTML + padding * 92)), "html-size")[0] == "warn"
    got, reason = status(wire(build(html=GOOD_HTML + padding * 110)), "html-size")
    assert got == "fail" and "clips" in reason


def test_line_endings_bare_lf_and_long_lines() -> None:
    good = wire(build())
    assert status(good, "line-endings")[0] == "pass"
    bare_lf = good.replace(b"\r\n", b"\n", 3)
    got, reason = status(bare_lf, "line-endings")
    assert got == "fail" and "bare LF" in reason
    long_line = good.replace(b"\r\n\r\n", b"\r\nX-Long: " + b"a" * 1000 + b"\r\n\r\n", 1)
    got, reason = status(long_line, "line-endings")
    assert got == "fail" and "998" in reason


def test_from_header() -> None:
    assert status(wire(build()), "from-header")[0] == "pass"
    assert status(wire(build(headers={"From": None})), "from-header")[0] == "fail"
    assert status(wire(build(headers={"From": "not an address"})), "from-header")[0] == "fail"


def test_date_header() -> None:
    assert status(wire(build()), "date-header")[0] == "pass"
    assert status(wire(build(headers={"Date": None})), "date-header")[0] == "fail"
    raw = wire(build()).replace(b"Mon, 05 Feb 2024 08:00:00 +0000", b"yesterday-ish")
    assert status(raw, "date-header")[0] == "fail"


def test_message_id() -> None:
    assert status(wire(build()), "message-id")[0] == "pass"
    assert status(wire(build(headers={"Message-ID": None})), "message-id")[0] == "fail"
    raw = wire(build()).replace(b"<digest-1.reader@news.example.com>", b"digest-1")
    got, reason = status(raw, "message-id")
    assert got == "fail" and "<left@right>" in reason


def test_external_stylesheet() -> None:
    assert status(wire(build()), "external-css")[0] == "pass"
    html = GOOD_HTML.replace("<head>", '<head><link rel="stylesheet" href="https://cdn.example/s.css">')
    got, reason = status(wire(build(html=html)), "external-css")
    assert got == "fail" and "s.css" in reason
    html = GOOD_HTML.replace("<style>", "<style>@import url(https://cdn.example/s.css);")
    assert status(wire(build(html=html)), "external-css")[0] == "fail"


def test_inlinable_style_rules_left_over() -> None:
    # The good sample keeps only @media and :hover rules, which cannot be inlined.
    assert status(wire(build()), "inlined-css")[0] == "pass"
    html = GOOD_HTML.replace("<style>", "<style>p.lead { color: #333; } /* comment */")
    got, reason = status(wire(build(html=html)), "inlined-css")
    assert got == "warn" and "p.lead" in reason


def test_img_alt() -> None:
    assert status(wire(build()), "img-alt")[0] == "pass"
    html = GOOD_HTML.replace(
        '<img src="https://news.example.com/logo.png" alt="Video Surveillance News"',
        '<img src="https://news.example.com/logo.png"',
    )
    got, reason = status(wire(build(html=html)), "img-alt")
    assert got == "fail" and "1 of 1" in reason


def test_absolute_links() -> None:
    assert status(wire(build()), "absolute-links")[0] == "pass"
    html = GOOD_HTML.replace('href="https://news.example.com/reports/axis-cameras"', 'href="/reports/axis"')
    got, reason = status(wire(build(html=html)), "absolute-links")
    assert got == "fail" and "/reports/axis" in reason


def test_unsubscribe_link_in_both_parts() -> None:
    assert status(wire(build()), "unsubscribe-link")[0] == "pass"
    text = GOOD_TEXT.replace("Unsubscribe: https://news.example.com/u/tok123\n", "")
    got, reason = status(wire(build(text=text)), "unsubscribe-link")
    assert got == "fail" and "text" in reason
    html = GOOD_HTML.replace('<a href="https://news.example.com/u/tok123">Unsubscribe</a> |', "")
    got, reason = status(wire(build(html=html)), "unsubscribe-link")
    assert got == "fail" and "HTML" in reason


def test_postal_address() -> None:
    assert status(wire(build()), "postal-address")[0] == "pass"
    text = GOOD_TEXT.replace("100 Main Street, Springfield, MA 01103", "Video Surveillance News")
    got, reason = status(wire(build(text=text)), "postal-address")
    assert got == "warn" and "HTML" in reason
    html = GOOD_HTML.replace("100 Main Street<br>Springfield, MA 01103", "")
    got, reason = status(wire(build(text=text, html=html)), "postal-address")
    assert got == "fail"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("100 Main Street, Springfield, MA 01103", True),
        ("Invidis GmbH, Torstraße 12, 10119 Berlin", True),
        ("10 Downing St, London SW1A 2AA", True),
        ("P.O. Box 1234", True),
        ("Read 5 new reports this week", False),
        ("Published 2024-02-05", False),
    ],
)
def test_postal_address_heuristic(line: str, expected: bool) -> None:
    assert has_postal_address(line) is expected


def test_checks_survive_a_malformed_message() -> None:
    checks = StoredMessage.from_bytes(b"\x00\xff garbage without headers").checks
    assert [c.name for c in checks] == list(CHECK_NAMES)
    assert any(c.status == "fail" for c in checks)
