"""Configuration: TOML plus NEWSLETTER_* overrides; every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_local_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def test_defaults_without_file_or_env():
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.smtp.port == 1025 and settings.digest.max_reports == 10


def test_toml_then_env_later_wins(tmp_path):
    path = toml(tmp_path, '[smtp]\nhost = "mail.example.net"\nport = 2525\n[digest]\nmax_reports = 5\n')
    settings = load_settings(
        path, env={"NEWSLETTER_SMTP_PORT": "2626", "NEWSLETTER_SITE_BASE_URL": "https://x.example.com"}
    )
    assert settings.smtp.host == "mail.example.net"
    assert settings.smtp.port == 2626
    assert settings.digest.max_reports == 5
    assert settings.site.base_url == "https://x.example.com"


def test_config_file_found_through_env_and_cwd(tmp_path):
    path = toml(tmp_path, "[web]\nport = 8123\n")
    assert load_settings(env={"NEWSLETTER_CONFIG": str(path)}).web.port == 8123
    assert load_settings(env={}).web.port == 8123  # ./newsletter.toml
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"NEWSLETTER_CONFIG": str(tmp_path / "missing.toml")})
    assert "NEWSLETTER_CONFIG" in one_line_error(excinfo)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(tmp_path / "nope.toml", env={})
    assert "nope.toml" in one_line_error(excinfo)


def test_unknown_key_names_it_and_suggests(tmp_path):
    path = toml(tmp_path, '[smtp]\nhots = "x"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={})
    assert "smtp.hots" in one_line_error(excinfo)
    assert "host" in excinfo.value.hint


def test_unknown_section(tmp_path):
    path = toml(tmp_path, "[smpt]\nport = 25\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={})
    assert "[smpt]" in one_line_error(excinfo)
    assert "smtp" in excinfo.value.hint


def test_bad_env_value_names_key_and_variable():
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"NEWSLETTER_SMTP_PORT": "abc"})
    message = one_line_error(excinfo)
    assert "smtp.port" in message and "NEWSLETTER_SMTP_PORT" in message and "'abc'" in message
    assert excinfo.value.hint


@pytest.mark.parametrize(
    "env, key",
    [
        ({"NEWSLETTER_SMTP_PORT": "0"}, "smtp.port"),
        ({"NEWSLETTER_SMTP_PORT": "70000"}, "smtp.port"),
        ({"NEWSLETTER_SMTP_SECURITY": "ssl"}, "smtp.security"),
        ({"NEWSLETTER_SITE_BASE_URL": "news.example.com"}, "site.base_url"),
        ({"NEWSLETTER_MAIL_FROM_ADDRESS": "nobody"}, "mail.from_address"),
        ({"NEWSLETTER_DIGEST_MAX_REPORTS": "0"}, "digest.max_reports"),
        ({"NEWSLETTER_DIGEST_MAX_HTML_BYTES": "12.5"}, "digest.max_html_bytes"),
        ({"NEWSLETTER_SITE_POSTAL_ADDRESS": "  "}, "site.postal_address"),
        ({"NEWSLETTER_MAIL_FROM_NAME": "News\r\nBcc: x@example.org"}, "mail.from_name"),
        ({"NEWSLETTER_DELIVERY_BACKOFF": "soon"}, "delivery.backoff"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(env, key):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env=env)
    assert key in one_line_error(excinfo)


def test_bad_toml_value_type(tmp_path):
    path = toml(tmp_path, '[digest]\nmax_reports = "ten"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={})
    message = one_line_error(excinfo)
    assert "digest.max_reports" in message and str(path) in message


def test_invalid_toml_syntax(tmp_path):
    path = toml(tmp_path, "[smtp\nport = 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={})
    assert "not valid TOML" in one_line_error(excinfo)


def test_unknown_newsletter_env_var_is_refused():
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"NEWSLETTER_SMTP_HOTS": "x"})
    assert "NEWSLETTER_SMTP_HOTS" in one_line_error(excinfo)
    assert "NEWSLETTER_SMTP_HOST" in excinfo.value.hint
    # other variables are none of our business
    assert load_settings(env={"HOME": "/nowhere", "SMTP_PORT": "x"}).smtp.port == 1025


def test_secrets_only_from_environment(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text('[site]\nsecret_key = "oops"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={})
    assert "NEWSLETTER_SECRET_KEY" in excinfo.value.hint
    key = "k" * 32
    settings = load_settings(env={"NEWSLETTER_SECRET_KEY": key, "NEWSLETTER_SMTP_PASSWORD": "p"})
    assert settings.site.secret_key == key and settings.smtp.password == "p"
    assert "password" not in repr(settings.smtp)
    assert "secret_key" not in repr(settings.site)


def test_project_newsletter_toml_is_valid():
    from newsletter.config import PROJECT_DIR

    settings = load_settings(PROJECT_DIR / "newsletter.toml", env={})
    assert settings.site.name == "Video Surveillance News"


def test_a_secret_key_shorter_than_32_bytes_is_refused():
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"NEWSLETTER_SECRET_KEY": "abc"})
    assert "32" in excinfo.value.message and "secrets.token_urlsafe" in excinfo.value.hint
