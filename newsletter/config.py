"""Settings: the only reader of configuration files and environment variables.

``load_settings`` builds one frozen ``Settings`` object at the edge (CLI, web,
scheduler); everything else receives it as an argument.

Sources, later wins: built-in defaults, the TOML file (``--config``,
``NEWSLETTER_CONFIG`` or ./newsletter.toml), then ``NEWSLETTER_<SECTION>_<KEY>``
environment variables. Secrets come from the environment only:
``NEWSLETTER_SMTP_PASSWORD`` and ``NEWSLETTER_SECRET_KEY``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from newsletter.config_sections import (
    DEFAULT_DATABASE_URL,
    DEFAULT_TEMPLATES,
    PACKAGE_DIR,
    PROJECT_DIR,
    SAMPLE_FEED,
    SAMPLE_SUBSCRIBERS,
    AdminSettings,
    DatabaseSettings,
    DeliverySettings,
    DigestSettings,
    MailSettings,
    ReportsSettings,
    ScheduleSettings,
    Settings,
    SiteSettings,
    SmtpSettings,
    WebhookSettings,
    WebSettings,
)
from newsletter.errors import ConfigError

# The sections are defined in config_sections; callers import them, and the loader, from here.
__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_TEMPLATES",
    "LOOPBACK_HOSTS",
    "MIN_SECRET_BYTES",
    "PACKAGE_DIR",
    "PROJECT_DIR",
    "SAMPLE_FEED",
    "SAMPLE_SUBSCRIBERS",
    "SECRET_KEYS",
    "SECTIONS",
    "SECURITY_CHOICES",
    "AdminSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "DigestSettings",
    "MailSettings",
    "ReportsSettings",
    "ScheduleSettings",
    "Settings",
    "SiteSettings",
    "SmtpSettings",
    "WebSettings",
    "WebhookSettings",
    "describe_keys",
    "find_config_file",
    "load_settings",
    "seconds_list",
]

SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[f.type] for f in dataclasses.fields(Settings)
}
# Keys that only the environment may set (secrets), mapped to their variable.
SECRET_KEYS = {
    ("smtp", "password"): "NEWSLETTER_SMTP_PASSWORD",
    ("site", "secret_key"): "NEWSLETTER_SECRET_KEY",
    ("mail", "dkim_private_key"): "NEWSLETTER_DKIM_PRIVATE_KEY",
}
SECRET_KEYS.update(
    {
        ("webhooks", "postmark_secret"): "NEWSLETTER_WEBHOOKS_POSTMARK_SECRET",
        ("webhooks", "mailgun_signing_key"): "NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY",
    }
)
SECURITY_CHOICES = ("none", "starttls", "tls")


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: ``--config``, else NEWSLETTER_CONFIG, else ./newsletter.toml if present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", hint="Pass an existing file to --config.")
        return path
    if env.get("NEWSLETTER_CONFIG"):
        path = Path(env["NEWSLETTER_CONFIG"])
        if not path.is_file():
            raise ConfigError(
                f"NEWSLETTER_CONFIG points at {path}, which does not exist",
                hint="Fix or unset NEWSLETTER_CONFIG.",
            )
        return path
    local = Path("newsletter.toml")
    return local if local.is_file() else None


def load_settings(
    config_path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the TOML file and the environment.

    Raises ConfigError (one line naming the key) for an unknown section or key,
    a value of the wrong type, or a value outside its allowed set.
    """
    env = os.environ if env is None else env
    path = find_config_file(config_path, env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}", hint="Fix the syntax at the line shown."
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    where = str(path) if path else "config"
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, table in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {where}", hint=_suggest(section, SECTIONS))
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] in {where} must be a table of keys")
        known = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"unknown key {section}.{key} in {where}", hint=_suggest(key, known))
            if (section, key) in SECRET_KEYS:
                raise ConfigError(
                    f"{section}.{key} must not be written in {where}",
                    hint=f"Set it in the environment variable {SECRET_KEYS[(section, key)]} instead.",
                )
            values[section][key] = _coerce(section, key, value, known[key], source=where)
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            var = SECRET_KEYS.get((section, f.name), f"NEWSLETTER_{section.upper()}_{f.name.upper()}")
            if var in env:
                values[section][f.name] = _coerce(section, f.name, env[var], f, source=var)
    _reject_unknown_env(env)
    settings = Settings(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})
    _validate(settings)
    return settings


def _reject_unknown_env(env: Mapping[str, str]) -> None:
    """A misspelt NEWSLETTER_* variable would silently do nothing; refuse it instead."""
    allowed = {"NEWSLETTER_CONFIG", "NEWSLETTER_TEST_DATABASE_URL", *SECRET_KEYS.values()}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if (section, f.name) not in SECRET_KEYS:
                allowed.add(f"NEWSLETTER_{section.upper()}_{f.name.upper()}")
    for var in env:
        if var.startswith("NEWSLETTER_") and var not in allowed:
            raise ConfigError(f"unknown environment variable {var}", hint=_suggest(var, allowed))


def _coerce(section: str, key: str, value: Any, f: dataclasses.Field[Any], *, source: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]
    )
    name = f"{section}.{key}"
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            return int(str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip())
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        return str(value)
    except ValueError:
        raise ConfigError(
            f"{name} (from {source}) must be "
            f"{'a number' if kind in (int, float) else 'true or false' if kind is bool else 'a string'},"
            f" got {value!r}",
            hint=f"Fix {name}; the default is {f.default!r}.",
        ) from None


def seconds_list(key: str, text: str) -> tuple[int, ...]:
    """The whole seconds of a comma-separated schedule such as ``delivery.backoff``, each above 0;
    ConfigError naming ``key`` otherwise. The one reader of such keys (see ``delivery.retry``)."""
    try:
        steps = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        steps = ()
    if not steps or min(steps) <= 0:
        raise ConfigError(
            f"{key} must be comma-separated seconds, got {text!r}",
            hint="For example 300,900,3600,14400 (5 min, 15 min, 1 h, 4 h).",
        )
    return steps


def _validate(settings: Settings) -> None:
    """ConfigError (with a hint where one helps) for the first value the service cannot run with."""
    _validate_smtp(settings.smtp)
    _validate_numbers(settings)
    _validate_web(settings)
    _validate_helo(settings.smtp)
    _validate_admin(settings.admin)
    _validate_delivery(settings)
    if settings.smtp.rate_limit < 0 or settings.smtp.timeout <= 0 or settings.reports.timeout <= 0:
        raise ConfigError("smtp.rate_limit must be >= 0 and the timeouts > 0")
    _validate_site_mail(settings.site, settings.mail)


def _validate_delivery(settings: Settings) -> None:
    """The retry schedules (the sender's and the web mail queue's) and the delivery engine's limits."""
    seconds_list("delivery.backoff", settings.delivery.backoff)
    seconds_list("web.mail_backoff", settings.web.mail_backoff)
    if not 0 < settings.delivery.breaker_threshold <= 1:
        raise ConfigError(
            f"delivery.breaker_threshold must be in (0, 1], got {settings.delivery.breaker_threshold}",
            hint="0.5 pauses an edition when half the recent attempts fail.",
        )
    if (
        settings.delivery.batch_size < 1
        or not 0 <= settings.delivery.retry_delay <= settings.delivery.retry_delay_max
        or settings.delivery.breaker_window < 10
    ):
        raise ConfigError(
            "delivery.batch_size must be at least 1, delivery.retry_delay from 0 to delivery.retry_delay_max"
            " and delivery.breaker_window at least 10"
        )


def _validate_smtp(smtp: SmtpSettings) -> None:
    """smtp.security is one we speak (its numbers: _validate_numbers; its HELO name: _validate_helo)."""
    if smtp.security not in SECURITY_CHOICES:
        raise ConfigError(
            f"smtp.security must be one of {', '.join(SECURITY_CHOICES)}, got {smtp.security!r}",
            hint="Use 'none' for a local sink, 'starttls' for port 587, 'tls' for port 465.",
        )


def _validate_numbers(settings: Settings) -> None:
    """The counts, sizes and ports with a floor; the SMTP and web ports also have a ceiling."""
    for name, value, low in (
        ("smtp.port", settings.smtp.port, 1),
        ("smtp.connections", settings.smtp.connections, 1),
        ("web.port", settings.web.port, 1),
        ("digest.max_reports", settings.digest.max_reports, 1),
        ("digest.max_html_bytes", settings.digest.max_html_bytes, 10_000),
        ("reports.teaser_length", settings.reports.teaser_length, 20),
        ("reports.max_feed_bytes", settings.reports.max_feed_bytes, 10_000),
    ):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if settings.smtp.port > 65535 or settings.web.port > 65535:
        raise ConfigError("smtp.port and web.port must be at most 65535")


def _validate_admin(admin: AdminSettings) -> None:
    """The console's port (0: mounted in the web app) and a session idle time of at least a minute."""
    if not 0 <= admin.port <= 65535 or admin.session_idle < 60:
        raise ConfigError(
            "admin.port must be 0 (mounted under /admin) to 65535, admin.session_idle at least 60 seconds"
        )


def _validate_site_mail(site: SiteSettings, mail: MailSettings) -> None:
    """What every message carries: links to an http(s) site, a sender address, single-line header
    values and the publisher's postal address."""
    if not site.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"site.base_url must start with https:// (or http:// for local testing), got {site.base_url!r}",
            hint="Set it to the public address of 'newsletter serve', e.g. https://news.example.com.",
        )
    if "@" not in mail.from_address:
        raise ConfigError(f"mail.from_address must be an email address, got {mail.from_address!r}")
    for key, text in (
        ("site.postal_address", site.postal_address),
        ("mail.from_name", mail.from_name),
        ("mail.list_id", mail.list_id),
    ):
        if any(ch in text for ch in "\r\n\x00"):
            raise ConfigError(f"{key} must be a single line", hint="Remove line breaks from the value.")
    if not site.postal_address.strip():
        raise ConfigError(
            "site.postal_address is empty",
            hint="CAN-SPAM requires a physical postal address in every message.",
        )


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _validate_helo(smtp: SmtpSettings) -> None:
    """A HELO name a receiving server accepts: one word, and never 'localhost' towards a remote server
    (strict servers refuse every message then, and the refusals must not look like bad readers)."""
    name = smtp.helo_name.strip()
    if smtp.helo_name and (
        not name
        or any(ch.isspace() for ch in smtp.helo_name)
        or not all(ch.isalnum() or ch in ".-[]:" for ch in name)
    ):
        raise ConfigError(
            f"smtp.helo_name must be one host name, got {smtp.helo_name!r}",
            hint="Use this host's public name, e.g. mail.example.com.",
        )
    if not name or smtp.host in LOOPBACK_HOSTS or smtp.host.startswith("127."):
        # The default (this host's FQDN) is checked when a send starts (delivery.smtp_client.helo_name).
        return
    if name.lower().split(".")[0] == "localhost" or "." not in name:
        raise ConfigError(
            f"smtp.helo_name is {name!r}, which {smtp.host} will refuse or distrust",
            hint="Set smtp.helo_name (NEWSLETTER_SMTP_HELO_NAME) to this host's public, fully-qualified name,"
            " e.g. mail.example.com.",
        )


MIN_SECRET_BYTES = 32


def _validate_web(settings: Settings) -> None:
    """The web app's keys: the signing key's length, proxies, connection limits, limit storage."""
    key = settings.site.secret_key
    if key and len(key.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"NEWSLETTER_SECRET_KEY is {len(key.encode('utf-8'))} bytes;"
            f" links signed with fewer than {MIN_SECRET_BYTES} can be forged",
            hint="Use python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
        )
    web = settings.web
    for proxy in (p.strip() for p in web.trusted_proxies.split(",") if p.strip()):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"web.trusted_proxies: {proxy!r} is not an IP address or network",
                hint="For example 10.0.0.5,10.1.0.0/16.",
            ) from None
    if (
        web.limit_concurrency < 1
        or web.timeout_keep_alive < 1
        or web.max_header_bytes < 4096
        or web.max_unconfirmed < 1
    ):
        raise ConfigError(
            "web.limit_concurrency, web.timeout_keep_alive and web.max_unconfirmed must be at least 1,"
            " web.max_header_bytes at least 4096"
        )
    if not web.rate_limit_storage.startswith(("memory://", "redis://", "rediss://")):
        raise ConfigError(
            f"web.rate_limit_storage must be memory:// or a redis:// URI, got {web.rate_limit_storage!r}",
            hint="redis://127.0.0.1:6379/0 shares the limits between web processes.",
        )


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f"Did you mean '{close[0]}'?"
    return "Valid names: " + ", ".join(sorted(choices))


def describe_keys() -> list[tuple[str, str, Any]]:
    """Every (key, environment variable, default), for docs and `newsletter config`."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            var = SECRET_KEYS.get((section, f.name), f"NEWSLETTER_{section.upper()}_{f.name.upper()}")
            rows.append((f"{section}.{f.name}", var, f.default))
    return rows
