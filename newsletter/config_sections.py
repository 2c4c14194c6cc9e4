"""The settings' sections: one frozen dataclass per TOML table, their keys and built-in defaults.

``newsletter.config`` reads files and the environment into them and checks the values; callers
import these names from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_TEMPLATES = PROJECT_DIR / "templates"
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_DIR / 'subscribers' / 'newsletter.db'}"
SAMPLE_FEED = PACKAGE_DIR / "data" / "sample_feed.xml"
SAMPLE_SUBSCRIBERS = PROJECT_DIR / "subscribers" / "sample.csv"


@dataclass(frozen=True)
class SiteSettings:
    name: str = "Video Surveillance News"
    base_url: str = "https://news.example.com"
    publisher: str = "Video Surveillance News"
    postal_address: str = "1 Example Plaza, Suite 100, Bethlehem, PA 18015, USA"
    # Read from NEWSLETTER_SECRET_KEY only; never from a file that may be committed.
    secret_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL


@dataclass(frozen=True)
class ReportsSettings:
    feed: str = str(SAMPLE_FEED)
    teaser_length: int = 280
    timeout: float = 20.0
    settle: int = 600  # seconds a new report waits before it may go out
    max_feed_bytes: int = 10_000_000  # a larger feed is refused (read in chunks: memory stays bounded)


@dataclass(frozen=True)
class DigestSettings:
    max_reports: int = 10
    max_html_bytes: int = 90_000
    templates: str = str(DEFAULT_TEMPLATES)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    security: str = "none"  # none | starttls | tls
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    connections: int = 4
    rate_limit: float = 0.0  # messages per second over all connections, 0 = unlimited
    retries: int = 3  # in-run retries of a row whose connection failed under it (a 4xx defers at once)
    helo_name: str = ""  # the name we greet the server with (EHLO); empty: this host's fully-qualified name


@dataclass(frozen=True)
class MailSettings:
    from_address: str = "news@example.com"
    from_name: str = "Video Surveillance News"
    reply_to: str = ""
    list_id: str = "Video Surveillance News <digest.news.example.com>"
    bounce_domain: str = ""  # empty: use the From domain
    # DKIM: one selector per key (at most one rsa and one ed25519), comma-separated; empty: no signing.
    dkim_selector: str = ""
    dkim_domain: str = ""  # d= of the signatures; empty: the From domain
    dkim_key_file: str = (
        ""  # the private key file(s), in selector order (`newsletter dkim keygen` writes them)
    )
    # Or the PEM text itself, from NEWSLETTER_DKIM_PRIVATE_KEY only (never the TOML).
    dkim_private_key: str = field(default="", repr=False)
    dkim_check_dns: bool = True  # `send` refuses to start while the published key does not match
    dns_server: str = ""  # host[:port] of the resolver for DNS checks; empty: the system's


@dataclass(frozen=True)
class DeliverySettings:
    journal_dir: str = str(PROJECT_DIR / "subscribers" / "journal")
    batch_size: int = 500  # rows claimed and results committed per transaction
    retry_delay: float = 1.0  # first pause of a connection the server refused or lost, doubling
    retry_delay_max: float = 30.0  # the longest such pause
    backoff: str = "300,900,3600,14400"  # seconds before each later attempt of a deferred row
    max_age: int = 3 * 24 * 3600  # a deferred row older than this fails
    soft_bounce_limit: int = 5  # soft failures within the window that suppress an address
    soft_bounce_window: int = 30  # days
    breaker_threshold: float = 0.5  # failure rate over the last attempts that pauses an edition
    breaker_window: int = 100  # attempts the breaker looks at
    lease: int = 300  # seconds a sender holds claimed rows before another may take them
    commit_interval: float = (
        0.25  # seconds: results are committed at least this often (bounds repeats after a takeover)
    )
    worker_name: str = ""  # this machine's name in claimed_by (name:pid); empty: the system's host name


@dataclass(frozen=True)
class ScheduleSettings:
    daily: str = "0 7 * * 1-5"
    weekly: str = "0 7 * * 1"
    timezone: str = "America/New_York"
    misfire_grace: int = 3600


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    # Proxies whose X-Forwarded-For / -Proto are believed (comma-separated IPs or networks);
    # empty: none, the peer address is the client (rate limits key on it).
    trusted_proxies: str = ""
    limit_concurrency: int = 200  # connections and tasks at once; above it new requests get 503
    timeout_keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    max_header_bytes: int = 16384  # h11's limit on a request's line and headers (a larger one is refused)
    rate_limit_storage: str = "memory://"  # redis://host:6379/0 to share the limits between web processes
    max_unconfirmed: int = 5  # confirmation mails, ever, to one mailbox that nobody confirmed
    mail_backoff: str = "10,60,300,900,3600"  # seconds before each retry of a mail the relay did not take


@dataclass(frozen=True)
class AdminSettings:
    """The operator console: 0 for port mounts it under /admin and /api of `serve`; else its own listener."""

    host: str = "127.0.0.1"
    port: int = 0
    session_idle: int = 1800  # seconds without a request before a console session ends


@dataclass(frozen=True)
class WebhookSettings:
    """Provider webhooks (newsletter/web/webhooks.py); an endpoint whose secret is empty answers 404."""

    ses_topic_arns: str = ""  # comma-separated SNS topic ARNs whose signed notifications are accepted
    postmark_secret: str = field(
        default="", repr=False
    )  # the basic-auth password in Postmark's webhook URL (user "postmark")
    mailgun_signing_key: str = field(default="", repr=False)  # Mailgun's HTTP webhook signing key
    sendgrid_public_key: str = ""  # SendGrid's signed event webhook verification key (base64)


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = SiteSettings()
    database: DatabaseSettings = DatabaseSettings()
    reports: ReportsSettings = ReportsSettings()
    digest: DigestSettings = DigestSettings()
    smtp: SmtpSettings = SmtpSettings()
    mail: MailSettings = MailSettings()
    delivery: DeliverySettings = DeliverySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    web: WebSettings = WebSettings()
    admin: AdminSettings = AdminSettings()
    webhooks: WebhookSettings = WebhookSettings()

    def replace(self, section: str, **values: Any) -> Settings:
        """Return a copy with some keys of one section changed (values are not re-validated)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **values)})
