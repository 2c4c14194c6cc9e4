"""One exception tree for the service.

Every error the operator can cause or fix carries a one-line message and a hint.
Edges (CLI, web, scheduler) decide how to show them; the core only raises.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the service raises on purpose.

    ``message`` says what is wrong, ``hint`` says how to fix it.
    """

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigError(NewsletterError):
    """A configuration file, key or value is wrong."""

    default_hint = "See the 'Configuration' section of README.md for every key."


class FeedError(NewsletterError):
    """The reports feed could not be fetched or parsed."""

    default_hint = (
        "Check reports.feed (NEWSLETTER_REPORTS_FEED):"
        " it must be a reachable RSS/Atom URL or a readable file."
    )


class SubscriberError(NewsletterError):
    """A subscriber operation was given bad data (address, topics, unknown subscriber)."""


class InvalidAddress(SubscriberError):
    """An email address is not valid."""

    default_hint = "Use a full address such as reader@example.org."


class ImportRowError(SubscriberError):
    """One row of a CSV import is bad; the row is skipped, the others are kept."""


class StoreError(NewsletterError):
    """The database could not be opened or is not in the expected shape."""

    default_hint = "Check database.url (NEWSLETTER_DATABASE_URL) and run 'newsletter db upgrade'."


class TemplateError(NewsletterError):
    """A template is missing or failed to render."""

    default_hint = "Check digest.templates (NEWSLETTER_DIGEST_TEMPLATES) points at a copy of templates/."


class DeliveryError(NewsletterError):
    """Mail could not be handed to the SMTP server."""

    default_hint = "Check the smtp.* settings and that the server is reachable."


class EditionError(NewsletterError):
    """An edition cannot be started or resumed in its current state."""


class AudienceChanged(EditionError):
    """A send confirmed for one number of readers would mail another: refused before any row is written."""

    def __init__(self, confirmed: int, planned: int) -> None:
        super().__init__(
            f"the audience changed from {confirmed} to {planned} readers since you confirmed:"
            " review and confirm again",
            hint="Send now (or GET /api/v1/send/audience) shows the count as it is now.",
        )
        self.confirmed = confirmed
        self.planned = planned


class TokenError(NewsletterError):
    """A signed link token is tampered, expired or made for another purpose."""

    default_hint = "Open the newest link from your mail, or ask for a new one at /manage."
