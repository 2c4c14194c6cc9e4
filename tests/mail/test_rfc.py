"""The strict RFC reading of every mail type: encoded words, line lengths, one List-Unsubscribe form,
no stray part headers, and the size cap measured on the bytes that go out."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes

from newsletter.service import Service
from newsletter.sink.message import StoredMessage
from tests.mail.helpers import MAIL_TYPES, digest_bytes, mail_bytes, report, subscriber

ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
NON_ASCII_TITLE = "Überwachung: Dahua & “Cybersecurity” – Überblick über die Prüfung der Kameras im Jahr 2026"


def head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def test_encoded_words_are_at_most_75_octets_in_every_mail_type(make_service: Callable[..., Service]) -> None:
    """Regression: a 77-character encoded word in the Subject (RFC 2047 allows 75)."""
    name = "Videoüberwachung – Wöchentliche Übersicht der Prüfberichte für Errichter"
    mail_service = make_service(NEWSLETTER_SITE_NAME=name, NEWSLETTER_MAIL_FROM_NAME=name)
    who = subscriber(
        42, email="reader@example.org", name="José Núñez-Ñandú de la Peña y Ölçer, Überwachungsbeauftragter"
    )
    for kind in MAIL_TYPES:
        data, _ = mail_bytes(
            kind,
            mail_service.settings,
            mail_service.signer,
            mail_service.store.subscribers,
            who,
            NON_ASCII_TITLE,
        )
        words = ENCODED_WORD.findall(head(data))
        assert words, f"{kind}: the case must hold encoded words"
        assert max(map(len, words)) <= 75, f"{kind}: {max(words, key=len)!r}"
        assert (
            max(len(line) for line in head(data).split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))
            <= 78
        ), kind


def test_quoted_printable_lines_are_at_most_76_octets_in_every_mail_type(mails: dict[str, bytes]) -> None:
    """Regression: the confirmation and manage mails had 78-octet quoted-printable lines
    (RFC 2045 allows 76)."""
    for kind, raw in mails.items():
        parsed = message_from_bytes(raw)
        for part in parsed.walk():
            if part.get("Content-Transfer-Encoding") == "quoted-printable":
                lines = str(part.get_payload()).split("\r\n")
                assert max(map(len, lines)) <= 76, (
                    f"{kind} {part.get_content_type()}: {max(lines, key=len)!r}"
                )


def test_list_unsubscribe_has_one_form_in_every_mail_type(mails: dict[str, bytes]) -> None:
    """Regression: the confirmation and manage mails folded List-Unsubscribe before "<",
    digests kept it on one line."""
    forms = set()
    for kind, raw in mails.items():
        (line,) = [line for line in head(raw).split(b"\r\n") if line.lower().startswith(b"list-unsubscribe:")]
        assert re.fullmatch(rb"List-Unsubscribe: <https://[^<>\s]+>", line), f"{kind}: {line!r}"
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head(raw) + b"\r\n", kind
        forms.add(re.sub(rb"<[^>]+>", b"<URI>", line))
    assert len(forms) == 1, forms


def test_no_mime_version_or_other_stray_header_inside_a_body_part(mails: dict[str, bytes]) -> None:
    """Regression: the confirmation and manage mails carried an extra MIME-Version inside their HTML part."""
    for kind, raw in mails.items():
        parsed = message_from_bytes(raw)
        assert parsed.is_multipart() and parsed["MIME-Version"] == "1.0", kind
        for part in parsed.get_payload():
            assert all(key.lower().startswith("content-") for key in part.keys()), f"{kind}: {part.keys()}"


def test_the_sinks_encoding_and_link_checks_pass_for_every_mail_type(mails: dict[str, bytes]) -> None:
    for kind, raw in mails.items():
        checks = {c.name: c for c in StoredMessage.from_bytes(raw).checks}
        for name in (
            "mime-encoding",
            "body-links",
            "fluid-layout",
            "line-endings",
            "list-unsubscribe",
            "unsubscribe-link",
        ):
            assert checks[name].status == "pass", f"{kind}: {checks[name]}"


def test_the_size_cap_holds_on_the_final_bytes_of_a_150_report_digest(mail_service: Service) -> None:
    """Regression: the cap was checked before the recipient's links were spliced in (and before encoding);
    a 150-report digest ended above digest.max_html_bytes."""
    settings = mail_service.settings
    cap = settings.digest.max_html_bytes
    teaser = (
        (
            "Axis is very late in releasing IR PTZs. While competitors have offered them for years,"
            " Axis has just released theirs. "
        )
        * 3
    )[:280]
    reports = [
        report(
            f"Report number {n}: a title of a realistic length for this feed",
            slug=f"report-{n}",
            teaser=teaser,
            n=n,
        )
        for n in range(150)
    ]
    who = subscriber(
        987654321,
        email="a.very.long.local.part.of.an.address.that.still.is.valid@" + "sub." * 10 + "example.org",
    )
    data, _ = digest_bytes(
        settings, mail_service.signer, who, reports, archive_url=settings.site.base_url + "/archive/123456789"
    )
    html_part = next(
        p
        for p in message_from_bytes(data.replace(b"\r\n..", b"\r\n.")).walk()
        if p.get_content_type() == "text/html"
    )
    on_the_wire = len(html_part.get_payload().encode("ascii"))
    decoded = len(html_part.get_payload(decode=True))
    assert decoded <= on_the_wire <= cap, (decoded, on_the_wire, cap)
    assert "more reports on" in html_part.get_payload(decode=True).decode(
        "utf-8"
    )  # the tail became "N more reports"
