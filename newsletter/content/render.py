"""Render a digest: Jinja2 templates, CSS inlined by premailer, a plain-text twin.

Rendering and inlining happen once per variant (a distinct report set). The
output still holds the per-recipient markers of ``newsletter.delivery.message``
(%%RECIPIENT%%, %%UNSUBSCRIBE_URL%%, %%PREFERENCES_URL%%), which the message
builder splices per recipient.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from premailer import Premailer

from newsletter.config import Settings
from newsletter.content.quoted_printable import qp_encode
from newsletter.errors import TemplateError
from newsletter.models import Report

RECIPIENT_MARK = "%%RECIPIENT%%"
UNSUBSCRIBE_MARK = "%%UNSUBSCRIBE_URL%%"
PREFERENCES_MARK = "%%PREFERENCES_URL%%"
MARKS = (RECIPIENT_MARK, UNSUBSCRIBE_MARK, PREFERENCES_MARK)
# "%%" in feed text is rendered as this, so it can never form a marker; the
# message builder and the web version turn it back into "%%" after splitting.
ESCAPED_PERCENTS = "%\u2060%"
# The longest values a recipient can bring: an address of 254 octets (RFC 5321 4.5.3.1.3),
# a signed token well above today's ~40 characters.
LONGEST_ADDRESS = 254
TOKEN_ALLOWANCE = 96
SPLICE_OVERHEAD = 8  # the soft breaks around each spliced value


@dataclass(frozen=True)
class RenderedDigest:
    """One variant's content, still holding the per-recipient markers."""

    subject: str
    html: str
    text: str
    reports: tuple[Report, ...]  # the reports shown
    more_count: int  # reports left out to stay under the size limit


def template_environment(templates_dir: str | Path) -> jinja2.Environment:
    """Jinja2 with autoescape for .html, StrictUndefined so a missing value is an error, not a blank."""
    directory = Path(templates_dir)
    if not directory.is_dir():
        raise TemplateError(f"template directory {directory} does not exist")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


class DigestRenderer:
    """Renders digests for one settings object; reuse it across variants (templates are cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = template_environment(settings.digest.templates)
        # cssutils warns on every mso-/vendor property; those warnings are noise, not errors.
        self._css_log = logging.getLogger("newsletter.premailer")
        self._css_log.setLevel(logging.CRITICAL)

    def render(
        self, reports: Sequence[Report], *, archive_url: str = "", as_of: datetime | None = None
    ) -> RenderedDigest:
        """Render the newest-first ``reports``; drop the tail (as "N more reports") to keep the HTML
        under digest.max_html_bytes.

        Measured on the final bytes (``final_html_bytes``): spliced for the longest recipient,
        quoted-printable.
        """
        if not reports:
            raise ValueError("a digest needs at least one report")
        limit = self.settings.digest.max_html_bytes
        shown = len(reports)
        while True:
            digest = self._render_once(
                reports[:shown], more_count=len(reports) - shown, archive_url=archive_url
            )
            size = final_html_bytes(digest.html, self.settings.site.base_url)
            if size <= limit or shown == 1:
                return digest
            # Shrink in proportion to the overshoot, at least one report per round.
            per_report = size / shown
            shown = max(1, min(shown - 1, int(limit / per_report) - 1))

    def _render_once(self, reports: Sequence[Report], *, more_count: int, archive_url: str) -> RenderedDigest:
        site = self.settings.site
        reports = [neutralise_marks(r) for r in reports]
        count = len(reports) + more_count
        context: dict[str, Any] = {
            "site": site,
            "reports": list(reports),
            "more_count": more_count,
            "more_url": site.base_url.rstrip("/") + "/archive" if not reports else _reports_index(reports),
            "archive_url": archive_url,
            "tagline": "The newest video surveillance industry reports",
            "intro": f"{count} new report{'s' if count != 1 else ''} since your last digest.",
            "total": count,
            "preheader": preheader(reports, count),
        }
        try:
            subject = self.env.get_template("digest_subject.txt").render(context)
            context["subject"] = " ".join(subject.split())  # one line, whatever the titles held
            html = self.env.get_template("digest.html").render(context)
            text = self.env.get_template("digest.txt").render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {exc.name} is missing from {self.settings.digest.templates}"
            ) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"a digest template failed to render: {exc}") from exc
        return RenderedDigest(
            context["subject"],
            inline_css(html, logger=self._css_log),
            _normalise_text(text),
            tuple(reports),
            more_count,
        )


def preheader(reports: Sequence[Report], total: int) -> str:
    """The inbox preview line: what the subject (headline and a count) leaves out."""
    if len(reports) == 1:
        return " ".join(reports[0].teaser.split()[:25])
    return "Also: " + " \u00b7 ".join(r.title for r in reports[1:4]) + (" \u2026" if total > 4 else "")


def final_html_bytes(html: str, base_url: str) -> int:
    """The size of the HTML part on the wire for the longest recipient values: spliced, then quoted-printable.

    The cap (digest.max_html_bytes) is about what goes out, not the template output
    with its short markers: every reader's message must stay under it.
    """
    link = base_url.rstrip("/") + "/preferences/" + "x" * TOKEN_ALLOWANCE
    longest = {RECIPIENT_MARK: "x" * LONGEST_ADDRESS, UNSUBSCRIBE_MARK: link, PREFERENCES_MARK: link}
    spliced = html
    for mark, value in longest.items():
        spliced = spliced.replace(mark, value + " " * SPLICE_OVERHEAD)
    return len(qp_encode(spliced))


def neutralise_marks(report: Report) -> Report:
    """Feed text that happens to contain a marker must stay literal, never become a reader's link.

    "%%" becomes ESCAPED_PERCENTS until the markers have been split out.
    """
    fields = {name: getattr(report, name) for name in ("title", "teaser", "url")}
    if not any("%%" in value for value in fields.values()):
        return report
    return replace(report, **{name: value.replace("%%", ESCAPED_PERCENTS) for name, value in fields.items()})


def inline_css(html: str, *, logger: logging.Logger | None = None) -> str:
    """Inline <style> rules into style attributes; keep @media rules; fetch nothing."""
    return Premailer(
        html,
        allow_network=False,
        allow_loading_external_files=False,
        keep_style_tags=False,  # rules that cannot be inlined (@media) stay in a <style> block
        remove_classes=False,
        strip_important=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        cssutils_logging_handler=logging.NullHandler(),
    ).transform()


def _reports_index(reports: Sequence[Report]) -> str:
    # "N more reports" points at the reports index of the site the reports come from.
    first = reports[0].url
    return first.rsplit("/", 1)[0] + "/" if "/" in first.split("://", 1)[-1] else first


def _normalise_text(text: str) -> str:
    # Collapse runs of blank lines the template's conditionals leave behind.
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


# Elements only a mailed copy has (the reason it was received, the personal links, "View in browser").
MAIL_ONLY = re.compile(r'<(p|td|div)\b[^>]*\bdata-mail-only="1"[^>]*>.*?</\1>', re.S)


def web_version(html: str, *, manage_url: str) -> str:
    """The public archive copy of a digest: no personal wording, links or address.

    The template marks what belongs to the mailed copy only (``data-mail-only``); it is
    dropped and one neutral "subscribe or manage" link takes the place of the first.
    """
    manage = (
        f'<p><a class="footer-link" href="{html_lib.escape(manage_url)}">'
        "Get this digest by email, or manage your subscription</a></p>"
    )
    public = MAIL_ONLY.sub("", html)
    if (
        public != html
    ):  # the manage link goes where the footer's personal lines were, before the postal address
        postal = public.find('class="postal"')
        cut = public.rfind("<p", 0, postal) if postal >= 0 else -1
        public = public[:cut] + manage + public[cut:] if cut >= 0 else public + manage
    # A template without the marks still never leaks a reader's links or address.
    public = (
        public.replace(UNSUBSCRIBE_MARK, manage_url)
        .replace(PREFERENCES_MARK, manage_url)
        .replace(RECIPIENT_MARK, "you")
    )
    return public.replace(ESCAPED_PERCENTS, "%%")
