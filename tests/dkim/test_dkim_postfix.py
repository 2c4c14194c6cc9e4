"""Signatures survive a real relay: the service signs, a private Postfix (tests/postfix) relays to the
sink, and dkimpy verifies what arrived against nsd on loopback, for both key types at once."""

from __future__ import annotations

import dkim
from dkim_records import key_record

from newsletter.delivery.dkim_keys import private_pem
from newsletter.sink import dkim as sink_dkim
from tests.postfix.conftest import postfix, relay, world  # noqa: F401  (the Postfix fixtures)


def test_signatures_survive_a_postfix_relay_for_both_key_types(
    world,  # noqa: F811
    relay,  # noqa: F811
    tmp_path,
    dns_zone,
    ed_key,
    rsa_key,
):
    server = dns_zone([key_record(ed_key), key_record(rsa_key)])
    files = []
    for key in (ed_key, rsa_key):
        path = tmp_path / f"{key.selector}.pem"
        path.write_bytes(private_pem(key.private))
        files.append(str(path))
    # Signed as the From domain (example.com); Postfix adds Received and its queue id, nothing we sign.
    world.configure(
        mail_dkim_selector=f"{ed_key.selector},{rsa_key.selector}",
        mail_dkim_key_file=",".join(files),
        mail_dns_server=server,
    )
    readers = world.add_subscribers(3, prefix="signed")
    world.run("dkim-relay")
    relay.settle(lambda: len(world.sink.messages()) >= len(readers))
    records = {
        f"{k.selector}._domainkey.example.com.".encode(): k.txt_record().encode() for k in (ed_key, rsa_key)
    }
    sink_dkim.use_dns(server)
    try:
        for message in world.sink.messages():
            assert b"\r\nReceived: " in message.raw or message.raw.startswith(b"Received: ")
            checks = {c.name: c for c in message.checks}
            assert checks["dkim"].status == "pass" and checks["dkim"].reason.count(": valid") == 2, checks[
                "dkim"
            ]
            assert checks["dkim-alignment"].status == "pass"
            assert dkim.DKIM(message.raw).verify(1, dnsfunc=lambda name, timeout=5: records.get(name))
    finally:
        sink_dkim.use_dns(None)
