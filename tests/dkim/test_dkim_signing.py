"""The signer: what it signs, that dkimpy (an independent implementation) verifies it, and that
the per-variant fast path gives exactly the bytes of signing each whole message."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.content.render import PREFERENCES_MARK, RECIPIENT_MARK, UNSUBSCRIBE_MARK
from newsletter.delivery.dkim import DkimSigner, signer_for
from newsletter.delivery.dkim_canonical import canonical_body
from newsletter.delivery.dkim_keys import DkimKey, load_keys, private_pem
from newsletter.delivery.message import PreparedMessage, dot_stuff
from newsletter.errors import ConfigError
from tests.factories import build_settings

MARKS = [RECIPIENT_MARK, UNSUBSCRIBE_MARK, PREFERENCES_MARK]
SIGNED = (
    "from:subject:list-id:mime-version:content-type:list-unsubscribe-post:"
    "to:date:message-id:list-unsubscribe:from"
)


def lookup_for(*keys: DkimKey):
    records = {f"{k.selector}._domainkey.example.com.".encode(): k.txt_record().encode() for k in keys}
    return lambda name, timeout=5: records.get(name)


def recipient(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "to_address": "reader@example.org",
        "to_name": "Reader",
        "message_id": "<e1.s1.ab@example.com>",
        "date": datetime(2026, 11, 29, 7, 0, tzinfo=UTC),
        "unsubscribe_url": "https://news.example.com/unsubscribe/tok",
        "preferences_url": "https://news.example.com/preferences/tok",
    }
    values.update(changes)
    return values


def prepared(text: str, html: str) -> PreparedMessage:
    return PreparedMessage(
        from_name="Video Surveillance News",
        from_address="news@example.com",
        subject="Weekly  digest",
        text=text,
        html=html,
        list_id="VSN <digest.news.example.com>",
    )


TEXT = (
    "Hello  there \n.a line that starts with a dot\n\tindented\n\n"
    f"Unsubscribe: {UNSUBSCRIBE_MARK}\nSent to {RECIPIENT_MARK}\n"
)
HTML = (
    f"<p>Hi   {RECIPIENT_MARK}</p>\n"
    f'   <a href="{UNSUBSCRIBE_MARK}">out</a> <a href="{PREFERENCES_MARK}">prefs</a>  \n'
)


def test_both_key_types_sign_and_each_signature_verifies_with_dkimpy(ed_key, rsa_key):
    signer = DkimSigner([ed_key, rsa_key], "example.com")
    message = signer.for_recipient(prepared(TEXT, HTML), **recipient())
    headers = re.findall(
        rb"(?m)^DKIM-Signature: v=1; a=([a-z0-9-]+); c=relaxed/relaxed; d=example.com;", message
    )
    assert headers == [b"ed25519-sha256", b"rsa-sha256"]
    for index in (0, 1):
        assert dkim.DKIM(message).verify(index, dnsfunc=lookup_for(ed_key, rsa_key))


def test_signed_headers_are_the_required_list_with_from_oversigned(ed_key):
    message = DkimSigner([ed_key], "example.com").for_recipient(prepared(TEXT, HTML), **recipient())
    signed = re.search(rb"h=([^;]+);", message.replace(b"\r\n ", b" ")).group(1).decode()
    assert signed.replace(" ", "") == SIGNED
    # Over-signing: a second From added on the way breaks the signature.
    forged = message.replace(b"\r\nFrom: ", b"\r\nFrom: Attacker <a@evil.example>\r\nFrom: ", 1)
    assert dkim.DKIM(message).verify(0, dnsfunc=lookup_for(ed_key))
    assert not dkim.DKIM(forged).verify(0, dnsfunc=lookup_for(ed_key))


def test_dkim_signature_header_goes_in_before_dot_stuffing(ed_key):
    """The sender writes stuffed bytes; the header must be part of what is stuffed, not of what is signed."""
    signer = DkimSigner([ed_key], "example.com", clock=lambda: 1_700_000_000)
    variant = prepared(TEXT, HTML)
    plain = signer.for_recipient(variant, **recipient())
    wire = signer.for_recipient(variant, dot_stuffed=True, **recipient())
    assert b"\r\n..a line that starts" in wire
    assert wire == dot_stuff(plain)
    assert dkim.DKIM(plain).verify(0, dnsfunc=lookup_for(ed_key))


def test_header_lines_stay_within_78_octets(ed_key, rsa_key):
    message = DkimSigner([ed_key, rsa_key], "example.com").for_recipient(prepared(TEXT, HTML), **recipient())
    head = message.split(b"\r\n\r\n", 1)[0]
    signature_lines = [line for line in head.split(b"\r\n") if line.startswith((b"DKIM", b" "))]
    assert max(len(line) for line in signature_lines[:12]) <= 78


piece = st.lists(st.sampled_from([*"ab .\t=<>&é\n", "  ", " \n", ".\n", "x" * 70]), max_size=30).map("".join)
value = st.text(alphabet=st.sampled_from(list("az09.@/-_ &<>\"'")), min_size=0, max_size=90)


@settings(
    max_examples=int(os.environ.get("DKIM_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.lists(st.tuples(piece, st.sampled_from(MARKS)), max_size=4),
    html=st.lists(st.tuples(piece, st.sampled_from(MARKS)), max_size=4),
    tail=piece,
    address_local=st.from_regex(r"[a-z.]{1,20}", fullmatch=True),
    unsub=value,
    prefs=value,
)
def test_fast_path_signs_exactly_what_whole_message_signing_signs(
    ed_key, text, html, tail, address_local, unsub, prefs
):
    variant = prepared("".join(p + m for p, m in text) + tail, "".join(p + m for p, m in html) + tail)
    signer = DkimSigner([ed_key], "example.com", clock=lambda: 1_700_000_000)
    values = recipient(
        to_address=f"{address_local}@example.org",
        unsubscribe_url="https://x.example/u/" + unsub,
        preferences_url="https://x.example/p/" + prefs,
    )
    signer.for_recipient(variant, **recipient())  # another reader first: the variant's pieces are learnt
    fast = signer.for_recipient(variant, **values)
    whole = signer.signed(variant.for_recipient(**values))
    assert fast == whole
    assert dkim.DKIM(fast).verify(0, dnsfunc=lookup_for(ed_key))


def test_relaxed_body_canonicalisation_matches_rfc_6376_examples():
    assert canonical_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert canonical_body(b"") == b""
    assert canonical_body(b"\r\n\r\n") == b""


# -- keys from configuration ------------------------------------------------------------------------


def test_dkim_off_when_no_selector(tmp_path):
    assert signer_for(build_settings(tmp_path)) is None


def test_key_from_the_environment_one_line_pem(tmp_path, ed_key):
    pem = private_pem(ed_key.private).decode().replace("\n", "\\n")
    settings = build_settings(
        tmp_path, NEWSLETTER_MAIL_DKIM_SELECTOR="ed2026", NEWSLETTER_DKIM_PRIVATE_KEY=pem
    )
    (key,) = load_keys(settings)
    assert key.public_b64() == ed_key.public_b64() and key.kind == "ed25519"


def test_private_key_is_refused_in_the_toml(tmp_path):
    from newsletter.config import load_settings

    config = tmp_path / "c.toml"
    config.write_text('[mail]\ndkim_private_key = "-----BEGIN PRIVATE KEY-----"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="must not be written"):
        load_settings(config, env={})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the DKIM key file"),
        (b"not a key", "holds no PEM private key"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "malformed or encrypted private key",
        ),
    ],
    ids=["missing", "not-pem", "malformed"],
)
def test_missing_or_malformed_key_is_one_line_with_a_hint(tmp_path, content, expected):
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
    settings = build_settings(
        tmp_path, NEWSLETTER_MAIL_DKIM_SELECTOR="s1", NEWSLETTER_MAIL_DKIM_KEY_FILE=str(path)
    )
    with pytest.raises(ConfigError) as caught:
        signer_for(settings)
    assert expected in caught.value.message and "\n" not in caught.value.message
    assert "keygen" in caught.value.hint or "mail.dkim_key_file" in caught.value.hint


def test_selector_without_any_key_is_refused(tmp_path):
    settings = build_settings(tmp_path, NEWSLETTER_MAIL_DKIM_SELECTOR="s1")
    with pytest.raises(ConfigError, match="no private key is given"):
        signer_for(settings)


def test_fast_path_is_taken_for_a_digest_shaped_variant(ed_key):
    """Guards the cost figure: the per-variant pieces are learnt and used, not the whole-body fallback."""
    signer = DkimSigner([ed_key], "example.com")
    variant = prepared(TEXT, HTML)
    signer.for_recipient(variant, **recipient())
    plan, headers = signer._plans[variant]
    assert plan is not None and len(plan.pieces) == 6
    assert headers is not None and set(headers.canonical) == {
        b"from",
        b"subject",
        b"list-id",
        b"mime-version",
        b"content-type",
        b"list-unsubscribe-post",
    }
    message = variant.for_recipient(
        **recipient(to_address="other@example.org", message_id="<other@example.com>")
    )
    end = message.index(b"\r\n\r\n")
    assert plan.body_hash(message[end + 4 :]) is not None
    assert headers.signed(message[: end + 2]) is not None


def test_sink_json_api_shows_the_dkim_checks_and_which_part_was_tampered(tmp_path, ed_key):
    import smtplib

    import httpx

    from newsletter.sink import dkim as sink_dkim
    from newsletter.sink.server import SinkServer

    signed = DkimSigner([ed_key], "example.com").for_recipient(prepared(TEXT, HTML), **recipient())
    head, body = signed.split(b"\r\n\r\n", 1)
    tampered = head + b"\r\n\r\n" + body.replace(b"Hello", b"Hallo", 1)
    sink_dkim.use_keys({f"{ed_key.selector}._domainkey.example.com": ed_key.txt_record()})
    try:
        with SinkServer(maildir=tmp_path / "maildir", http_port=0) as sink:
            with smtplib.SMTP(
                sink.host, sink.smtp_port, timeout=10
            ) as client:  # smtplib does the dot-stuffing
                client.sendmail("b@example.com", ["good@example.org"], signed)
                client.sendmail("b@example.com", ["bad@example.org"], tampered)
            assert sink.http_url is not None
            with httpx.Client(base_url=sink.http_url, trust_env=False, timeout=15) as http:
                listed = http.get("/api/messages").json()["messages"]
                checks = {
                    m["rcpt_tos"][0]: {
                        c["name"]: c for c in http.get(f"/api/messages/{m['id']}").json()["checks"]
                    }
                    for m in listed
                }
    finally:
        sink_dkim.use_dns(None)
    good, bad = checks["good@example.org"], checks["bad@example.org"]
    assert (
        good["dkim"]["status"] == "pass"
        and "ed25519-sha256 d=example.com s=ed2026: valid" in good["dkim"]["reason"]
    )
    assert good["dkim-alignment"]["status"] == "pass"
    assert bad["dkim"]["status"] == "fail" and "the body changed after signing" in bad["dkim"]["reason"]
    assert bad["dkim-alignment"]["status"] == "fail"
