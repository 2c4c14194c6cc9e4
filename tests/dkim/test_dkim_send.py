"""Mail the service signs verifies, with dkimpy, against a real name server on loopback.

The whole path: `EditionRunner.run` (what `newsletter send` runs) signs each digest, the
in-process sink receives it (dot-stuffing undone), and the sink's own checks verify it
against nsd; the web app's confirmation mail too. A key that is missing, malformed,
unpublished or different from DNS stops the send before any mail goes out.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from dkim_records import key_record

from newsletter.config import SAMPLE_SUBSCRIBERS
from newsletter.delivery.dkim_keys import DkimKey, generate_key, private_pem
from newsletter.errors import ConfigError
from newsletter.sink import dkim as sink_dkim
from newsletter.subscriptions import import_file
from tests.factories import utc

AS_OF = utc(2018, 8, 22)
GOOD_ZONE_EXTRA = [
    ("@", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc", "TXT", "v=DMARC1; p=reject"),
    ("@", "MX", "10 mx.example.com."),
    ("mx", "A", "127.0.0.1"),
]


@pytest.fixture(autouse=True)
def sink_keys_reset() -> Iterator[None]:
    yield
    sink_dkim.use_dns(None)


def key_env(tmp_path: Path, *keys: DkimKey, server: str) -> dict[str, str]:
    files = []
    for key in keys:
        path = tmp_path / f"{key.selector}.pem"
        path.write_bytes(private_pem(key.private))
        files.append(str(path))
    return {
        "NEWSLETTER_MAIL_DKIM_SELECTOR": ",".join(k.selector for k in keys),
        "NEWSLETTER_MAIL_DKIM_KEY_FILE": ",".join(files),
        "NEWSLETTER_MAIL_DNS_SERVER": server,
    }


def dkimpy_lookup(server: str):
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    host, port = server.split(":")
    resolver.nameservers, resolver.port = [host], int(port)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            return b"".join(resolver.resolve(name.decode(), "TXT")[0].strings)
        except Exception:
            return None

    return lookup


@pytest.mark.parametrize("kinds", [("ed",), ("rsa",), ("ed", "rsa")], ids=["ed25519", "rsa", "both"])
def test_digests_signed_by_send_verify_against_loopback_dns(
    make_service, sink, tmp_path, dns_zone, ed_key, rsa_key, kinds
):
    keys = [{"ed": ed_key, "rsa": rsa_key}[k] for k in kinds]
    server = dns_zone([*map(key_record, keys), *GOOD_ZONE_EXTRA])
    service = make_service(**key_env(tmp_path, *keys, server=server))
    import_file(service.store, SAMPLE_SUBSCRIBERS)
    result = service.runner.run(key="signed", as_of=AS_OF)
    assert result.edition.status.value == "sent"
    messages = sink.messages()
    assert len(messages) >= 5
    sink_dkim.use_dns(server)
    lookup = dkimpy_lookup(server)
    for message in messages:
        raw = message.raw
        signatures = re.findall(rb"(?im)^DKIM-Signature:", raw)
        assert len(signatures) == len(keys)
        for index in range(len(keys)):
            assert dkim.DKIM(raw).verify(index, dnsfunc=lookup), (index, raw[:1200])
        checks = {c.name: c for c in message.checks}
        assert checks["dkim"].status == "pass", checks["dkim"]
        assert checks["dkim"].reason.count(": valid") == len(keys)
        assert checks["dkim-alignment"].status == "pass", checks["dkim-alignment"]


def test_signature_is_made_before_dot_stuffing_so_leading_dots_verify(
    make_service, sink, tmp_path, dns_zone, ed_key
):
    """A body line starting with "." is doubled on the wire and undone by the receiver:
    what was signed is what arrives."""
    server = dns_zone([key_record(ed_key)])
    service = make_service(**key_env(tmp_path, ed_key, server=server))
    service.store.subscribers.add_subscriber(email=".dot@example.org", name="Dot")
    service.runner.run(key="dots", as_of=AS_OF)
    (message,) = sink.messages()
    assert b"\r\n." in message.raw  # the recipient's address starts a line in the text part
    assert dkim.DKIM(message.raw).verify(0, dnsfunc=dkimpy_lookup(server))


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("none", "no key published at ed2026._domainkey.example.com"),
        ("other", "key mismatch at ed2026._domainkey.example.com"),
    ],
    ids=["selector-with-no-published-key", "key-differs-from-dns"],
)
def test_send_refuses_a_key_dns_does_not_publish_before_any_mail(
    make_service, sink, tmp_path, dns_zone, ed_key, published, expected
):
    records = [key_record(DkimKey(ed_key.selector, generate_key("ed25519")))] if published == "other" else []
    server = dns_zone([*records, *GOOD_ZONE_EXTRA])
    service = make_service(**key_env(tmp_path, ed_key, server=server))
    import_file(service.store, SAMPLE_SUBSCRIBERS)
    with pytest.raises(ConfigError) as caught:
        service.runner.run(key="refused", as_of=AS_OF)
    assert expected in caught.value.message
    assert "\n" not in caught.value.message and "dns check" in caught.value.hint
    assert sink.messages() == []


def test_confirmation_mail_is_signed_and_verifies(make_service, tmp_path, dns_zone, ed_key, rsa_key):
    import jinja2

    from newsletter.web.mailer import CONFIRM, Mailer

    server = dns_zone([key_record(ed_key), key_record(rsa_key)])
    service = make_service(**key_env(tmp_path, ed_key, rsa_key, server=server))
    subscriber, _ = service.store.subscribers.add_subscriber(email="new@example.org", name="New")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(service.settings.digest.templates), autoescape=True
    )
    mailer = Mailer(service.settings, env, service.signer, service.store.subscribers)
    data = mailer.build(CONFIRM, subscriber, now=AS_OF)
    lookup = dkimpy_lookup(server)
    assert dkim.DKIM(data).verify(0, dnsfunc=lookup) and dkim.DKIM(data).verify(1, dnsfunc=lookup)


def test_tampered_body_and_header_fail_in_the_sink_and_say_which(
    make_service, sink, tmp_path, dns_zone, ed_key
):
    server = dns_zone([key_record(ed_key)])
    service = make_service(**key_env(tmp_path, ed_key, server=server))
    service.store.subscribers.add_subscriber(email="reader@example.org", name="Reader")
    service.runner.run(key="tamper", as_of=AS_OF)
    (original,) = sink.messages()
    raw = original.raw
    head, body = raw.split(b"\r\n\r\n", 1)
    body_tampered = head + b"\r\n\r\n" + body.replace(b"nsubscribe", b"nsubscrib3", 1)
    header_tampered = re.sub(rb"(?m)^Subject: ", b"Subject: FREE ", raw, count=1)
    assert body_tampered != raw and header_tampered != raw
    sink.clear()
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail("b@example.com", ["body@example.org"], body_tampered)
        client.sendmail("b@example.com", ["header@example.org"], header_tampered)
    sink_dkim.use_dns(server)
    checks = {m.rcpt_tos[0]: {c.name: c for c in m.checks} for m in sink.messages()}
    body, header = checks["body@example.org"]["dkim"], checks["header@example.org"]["dkim"]
    assert body.status == "fail" and "body changed" in body.reason, body
    assert header.status == "fail" and "signed header changed" in header.reason, header
    assert checks["body@example.org"]["dkim-alignment"].status == "fail"
