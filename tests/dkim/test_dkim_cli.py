"""`newsletter dkim keygen` and `newsletter dns check`, run as an operator runs them,
against nsd on loopback."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from dkim_records import key_record

from newsletter.cli import main
from newsletter.delivery.dkim_keys import DkimKey, generate_key, parse_private_keys
from tests.factories import SECRET_KEY


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    config = tmp_path / "newsletter.toml"
    if not config.exists():
        config.write_text("", encoding="utf-8")
    full_env = {"NEWSLETTER_SECRET_KEY": SECRET_KEY, **(env or {})}
    return CliRunner().invoke(main, ["--config", str(config), *args], env=full_env, catch_exceptions=False)


def test_keygen_writes_a_private_key_mode_0600_and_prints_its_txt_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(tmp_path, "dkim", "keygen", "--selector", "news26")
    assert result.exit_code == 0, result.output
    path = tmp_path / "dkim" / "news26.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (private,) = parse_private_keys(path.read_bytes(), "test")
    record = DkimKey("news26", private).txt_record()
    assert f'news26._domainkey.example.com. 3600 IN TXT "{record}"' in result.output
    again = run(tmp_path, "dkim", "keygen", "--selector", "news26")
    assert again.exit_code == 1 and "already exists" in again.output and "Hint:" in again.output


def test_keygen_rsa_is_2048_bits_and_its_record_is_split_for_zone_files(tmp_path):
    result = run(
        tmp_path, "dkim", "keygen", "--selector", "r1", "--type", "rsa", "--out", str(tmp_path / "r1.pem")
    )
    assert result.exit_code == 0, result.output
    (private,) = parse_private_keys((tmp_path / "r1.pem").read_bytes(), "test")
    assert private.key_size == 2048  # type: ignore[union-attr]
    line = next(line for line in result.output.splitlines() if "IN TXT" in line)
    assert all(len(chunk) <= 255 for chunk in line.split('"')[1::2])


def dkim_env(tmp_path: Path, key: DkimKey, server: str, **extra: str) -> dict[str, str]:
    path = tmp_path / f"{key.selector}.pem"
    from newsletter.delivery.dkim_keys import private_pem

    path.write_bytes(private_pem(key.private))
    return {
        "NEWSLETTER_MAIL_DKIM_SELECTOR": key.selector,
        "NEWSLETTER_MAIL_DKIM_KEY_FILE": str(path),
        "NEWSLETTER_MAIL_DNS_SERVER": server,
        **extra,
    }


def test_dns_check_passes_a_complete_zone(tmp_path, dns_zone, ed_key):
    server = dns_zone(
        [
            key_record(ed_key),
            ("@", "TXT", "v=spf1 ip4:192.0.2.10 include:_spf.example.com -all"),
            ("_spf", "TXT", "v=spf1 ip4:198.51.100.0/24 -all"),
            ("_dmarc", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.com"),
            ("@", "MX", "10 mx.example.com."),
            ("mx", "A", "192.0.2.25"),
        ]
    )
    result = run(tmp_path, "dns", "check", "--relay", "198.51.100.7", env=dkim_env(tmp_path, ed_key, server))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith("OK") for line in lines), result.output


def test_dns_check_names_each_problem_with_its_fix(tmp_path, dns_zone, ed_key):
    published = DkimKey(ed_key.selector, generate_key("ed25519"))  # not the configured key
    server = dns_zone(
        [
            key_record(published),
            ("@", "TXT", "v=spf1 ip4:192.0.2.10 -all"),
            ("_dmarc", "TXT", "v=DMARC1; p=none"),
        ]
    )
    env = dkim_env(tmp_path, ed_key, server, NEWSLETTER_MAIL_BOUNCE_DOMAIN="example.com")
    result = run(tmp_path, "dns", "check", "--relay", "203.0.113.9", env=env)
    assert result.exit_code == 1
    out = result.output
    assert (
        "FAIL  SPF example.com: 'v=spf1 ip4:192.0.2.10 -all' does not include the relay 203.0.113.9; add ip4:"
        in out
    )
    assert (
        "FAIL  DKIM ed2026._domainkey.example.com: key mismatch" in out
        and 'TXT "v=DKIM1; k=ed25519; p=' + ed_key.public_b64() in out
    )
    assert "WARN  DMARC _dmarc.example.com: p=none only monitors" in out
    assert "FAIL  MX example.com: no MX record" in out
    assert "Error: 2 DNS problem(s)" not in out and "Error: 3 DNS problem(s) above" in out


def test_dns_check_says_dmarc_absent_and_domains_not_aligned(tmp_path, dns_zone, ed_key):
    server = dns_zone([key_record(ed_key), ("@", "TXT", "v=spf1 -all")])
    env = dkim_env(tmp_path, ed_key, server, NEWSLETTER_MAIL_BOUNCE_DOMAIN="bounces.other.net")
    result = run(tmp_path, "dns", "check", env=env)
    assert result.exit_code == 1
    assert (
        "FAIL  alignment: the bounce domain bounces.other.net is not under the From domain example.com"
        in result.output
    )
    assert "FAIL  DMARC _dmarc.example.com: no DMARC record" in result.output
    assert "OK    DKIM ed2026._domainkey.example.com" in result.output


def test_dns_check_with_an_unpublished_selector(tmp_path, dns_zone, ed_key):
    server = dns_zone([("@", "TXT", "v=spf1 -all")])
    result = run(tmp_path, "dns", "check", env=dkim_env(tmp_path, ed_key, server))
    assert (
        "FAIL  DKIM ed2026._domainkey.example.com: no key published at ed2026._domainkey.example.com; publish"
        in result.output
    )


def test_send_with_a_malformed_key_stops_with_one_line_and_a_hint_before_any_mail(
    tmp_path, sink, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", encoding="ascii")
    env = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "NEWSLETTER_SMTP_PORT": str(sink.port),
        "NEWSLETTER_REPORTS_SETTLE": "0",
        "NEWSLETTER_DELIVERY_JOURNAL_DIR": str(tmp_path / "journal"),
        "NEWSLETTER_MAIL_DKIM_SELECTOR": "s1",
        "NEWSLETTER_MAIL_DKIM_KEY_FILE": str(bad),
    }
    assert run(tmp_path, "subscribers", "add", "reader@example.org", env=env).exit_code == 0
    result = run(tmp_path, "send", env=env)
    assert result.exit_code == 1
    assert (
        "Error: the DKIM key file" in result.output and "malformed or encrypted private key" in result.output
    )
    assert "Hint: " in result.output and "Traceback" not in result.output
    assert sink.messages() == []


def test_config_never_prints_the_dkim_private_key(tmp_path, ed_key):
    from newsletter.delivery.dkim_keys import private_pem

    pem = private_pem(ed_key.private).decode()
    result = run(
        tmp_path,
        "config",
        env={
            "NEWSLETTER_DKIM_PRIVATE_KEY": pem,
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        },
    )
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output and pem.splitlines()[1][:20] not in result.output
    assert "(set)" in result.output
