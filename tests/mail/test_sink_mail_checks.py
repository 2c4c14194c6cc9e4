"""The sink's mail checks (newsletter.sink.mail_checks):
each one passes a good message and catches its defect.

These are the checks a developer using the sink would have needed to see the defects of
the old mails: a body link that lost a dot, 78-octet quoted-printable lines, a 77-octet
encoded word, a MIME-Version inside a part, a fixed 600 px layout, a SpamAssassin hit.
"""

from __future__ import annotations

import shutil

import pytest

from newsletter.delivery.message import PreparedMessage
from newsletter.sink.message import StoredMessage

URI = "https://news.example.com/unsubscribe/MTIzNDU2.abc.def"
FLUID = '<table width="100%" style="max-width:600px"><tr><td>Hello</td></tr></table>'


def message(
    *, html_link: str = URI, text_link: str = URI, html_body: str = FLUID, list_unsubscribe: str = URI
) -> bytes:
    return PreparedMessage(
        from_name="Video Surveillance News",
        from_address="news@example.com",
        subject="S",
        text=f"Hello\n\nUnsubscribe:\n{text_link}\n\n1 Main Street, Springfield, MA 01103\n",
        html=f'{html_body}<p><a href="{html_link}">Unsubscribe</a></p>'
        "<p>1 Main Street, Springfield, MA 01103</p>",
        list_id="L <l.example.com>",
    ).for_recipient(
        to_address="r@example.org",
        to_name="",
        message_id="<m@example.com>",
        date="Thu, 26 Nov 2026 12:00:00 +0000",
        unsubscribe_url=list_unsubscribe,
        preferences_url="",
    )


def check(raw: bytes, name: str) -> tuple[str, str]:
    (found,) = [c for c in StoredMessage.from_bytes(raw).checks if c.name == name]
    return found.status, found.reason


def test_body_links_pass_when_equal_and_fail_when_a_dot_was_lost() -> None:
    assert check(message(), "body-links")[0] == "pass"
    lost = URI.replace(".abc", "abc")  # what a server does to an unstuffed line-leading dot
    assert check(message(html_link=lost), "body-links") == (
        "fail",
        f"the HTML part's unsubscribe link {lost!r} differs from List-Unsubscribe {URI!r}",
    )
    assert check(message(text_link=lost), "body-links")[0] == "fail"


def with_header(raw: bytes, line: bytes) -> bytes:
    return line + b"\r\n" + raw


def test_mime_encoding_catches_long_encoded_words_long_qp_lines_and_stray_part_headers() -> None:
    good = message()
    assert check(good, "mime-encoding")[0] == "pass"
    word = b"=?utf-8?b?" + b"w5wu" * 16 + b"w?="  # 77 octets
    assert len(word) == 77
    assert check(with_header(good, b"X-Note: " + word), "mime-encoding")[0] == "fail"
    long_line = good.replace(b"Hello</td>", b"Hello" + b"x" * 75 + b"=\r\n</td>", 1)
    status, reason = check(long_line, "mime-encoding")
    assert status == "fail" and "text/html quoted-printable line" in reason and "RFC 2045 allows 76" in reason
    stray = good.replace(
        b"Content-Type: text/html; charset=utf-8\r\n",
        b"Content-Type: text/html; charset=utf-8\r\nMIME-Version: 1.0\r\n",
        1,
    )
    assert check(stray, "mime-encoding")[0] == "warn"


def test_fluid_layout_fails_a_fixed_600_px_table_without_max_width() -> None:
    assert check(message(), "fluid-layout")[0] == "pass"
    fixed = '<table width="600"><tr><td>Hello</td></tr></table>'
    status, reason = check(message(html_body=fixed), "fluid-layout")
    assert status == "fail" and "600 px" in reason
    assert check(message(html_body='<div style="width: 640px">x</div>'), "fluid-layout")[0] == "fail"
    assert (
        check(
            message(
                html_body='<img src="https://x.example/a.png" alt="" width="600" style="max-width: 100%">'
            ),
            "fluid-layout",
        )[0]
        == "pass"
    )
    assert (
        check(
            message(
                html_body='<!--[if mso]><table width="600"><tr><td><![endif]-->'
                + FLUID
                + "<!--[if mso]></td></tr></table><![endif]-->"
            ),
            "fluid-layout",
        )[0]
        == "pass"
    )


def test_spamassassin_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SINK_SPAMASSASSIN", raising=False)
    assert check(message(), "spamassassin") == (
        "pass",
        "not scored (set SINK_SPAMASSASSIN=1 to run spamassassin -L on each message)",
    )


@pytest.mark.skipif(
    shutil.which("spamassassin") is None, reason="spamassassin is not installed (.ci/run installs it)"
)
def test_spamassassin_flags_a_low_contrast_hidden_preheader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old preheader: hidden text in the background colour."""
    monkeypatch.setenv("SINK_SPAMASSASSIN", "1")
    hidden = (
        '<body style="background-color:#eef1f4"><div style="display:none;color:#eef1f4;font-size:1px">'
        + "Preview text of the digest " * 4
        + "</div>"
        + FLUID
    )
    status, reason = check(message(html_body=hidden), "spamassassin")
    assert status == "warn" and "HTML_FONT_LOW_CONTRAST" in reason, reason
