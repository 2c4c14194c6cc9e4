"""The sink receiving real SMTP from smtplib: storage, restart, limits, filters, waiting."""

from __future__ import annotations

import mailbox
import smtplib
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sink_samples import build, wire

from newsletter.sink.errors import ForeignMessageError, ListenError, MessageGoneError
from newsletter.sink.message import StoredMessage
from newsletter.sink.server import SinkServer


def send(
    sink: SinkServer, raw: bytes, *, to: str = "reader@example.org", sender: str = "news@news.example.com"
) -> None:
    with smtplib.SMTP(sink.host, sink.smtp_port, timeout=10) as client:
        client.sendmail(sender, [to], raw)


def test_stores_the_exact_bytes_received(sink: SinkServer, smtp: smtplib.SMTP) -> None:
    raw = wire(build()) + b".leading dot line\r\n..two dots\r\n"
    smtp.sendmail("news@news.example.com", ["reader@example.org"], raw)
    [message] = sink.wait_for(to="reader@example.org")
    # smtplib dot-stuffs, the sink un-stuffs: the bytes match what the client meant to send.
    assert message.raw == raw
    assert message.mail_from == "news@news.example.com"
    assert message.rcpt_tos == ("reader@example.org",)
    assert message.subject == "Video Surveillance News: this week"
    assert message.to == ("reader@example.org",)
    assert "Axis launches" in (message.text or "")
    assert "<a href" in (message.html or "")
    assert message.as_email()["Message-ID"] == "<digest-1.reader@news.example.com>"
    assert sink.get(message.id) is message


def test_bare_lf_is_kept_for_the_checks(sink: SinkServer, smtp: smtplib.SMTP) -> None:
    raw = b"From: a@example.com\r\nSubject: lf\r\n\r\nline one\nline two\r\n"
    smtp.sendmail("a@example.com", ["b@example.org"], raw)
    [message] = sink.wait_for(to="b@example.org")
    assert message.raw == raw
    line_endings = next(c for c in message.checks if c.name == "line-endings")
    assert line_endings.status == "fail"


def test_maildir_on_disk_is_readable_and_survives_a_restart(maildir: Path) -> None:
    raws = [wire(build(subject=f"Issue {n}")) for n in range(3)]
    with SinkServer(maildir=maildir) as sink:
        for raw in raws:
            send(sink, raw)
        ids = [m.id for m in sink.wait_for(count=3)]
    # A mail client (here: the stdlib's) sees the same messages.
    box = mailbox.Maildir(maildir, factory=None, create=False)
    assert sorted(box.get_bytes(key) for key in box.keys()) == sorted(raws)
    with SinkServer(maildir=maildir) as again:
        found = again.messages()
        assert [m.id for m in found] == ids
        assert [m.subject for m in found] == ["Issue 2", "Issue 1", "Issue 0"]
        assert found[0].mail_from == "news@news.example.com"
        assert found[0].rcpt_tos == ("reader@example.org",)
        assert found[0].raw == raws[2]


def test_files_without_an_index_line_are_listed_but_never_deleted(maildir: Path) -> None:
    with SinkServer(maildir=maildir):
        pass
    dropped = maildir / "cur" / "1700000000.dropped.host:2,S"
    content = wire(build(subject="Dropped in"))
    dropped.write_bytes(content)
    with SinkServer(maildir=maildir) as sink:
        [message] = sink.messages()
        assert message.subject == "Dropped in"
        assert message.mail_from == "news@news.example.com"
        with pytest.raises(ForeignMessageError, match="never deletes mail it did not store"):
            sink.delete(message.id)
        assert sink.clear() == 0
    assert dropped.read_bytes() == content


def test_retention_cap_deletes_the_oldest(maildir: Path) -> None:
    with SinkServer(maildir=maildir, max_messages=3) as sink:
        for n in range(5):
            send(sink, wire(build(subject=f"n{n}")))
        sink.wait_for(subject="n4")
        assert [m.subject for m in sink.messages()] == ["n4", "n3", "n2"]
        sink.flush()
        assert len(list((maildir / "new").iterdir())) == 3
    with SinkServer(maildir=maildir, max_messages=3) as again:
        assert [m.subject for m in again.messages()] == ["n4", "n3", "n2"]


def test_size_limit_rejects_with_552(maildir: Path) -> None:
    with SinkServer(maildir=maildir, max_message_size=2000) as sink:
        big = wire(build(text="x" * 3000, html=None))
        with smtplib.SMTP(sink.host, sink.smtp_port) as client:
            # smtplib announces SIZE=..., so the sink refuses at MAIL already.
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("a@example.com", ["b@example.org"], big)
            assert refused.value.smtp_code == 552
            # Without SIZE the limit is enforced on the data itself.
            client.rset()
            client.mail("a@example.com")
            client.rcpt("b@example.org")
            code, _ = client.data(big)
            assert code == 552
            # The connection stays usable and a small message is accepted.
            client.sendmail("a@example.com", ["b@example.org"], b"Subject: small\r\n\r\nok\r\n")
        assert [m.subject for m in sink.wait_for()] == ["small"]


def test_smtputf8_and_8bitmime(sink: SinkServer, smtp: smtplib.SMTP) -> None:
    raw = "From: jörg@münchen.example\r\nTo: zoë@例え.jp\r\nSubject: Grüße\r\n\r\nÜberwachung\r\n".encode()
    smtp.ehlo()
    assert smtp.has_extn("smtputf8") and smtp.has_extn("8bitmime")
    smtp.sendmail("jörg@münchen.example", ["zoë@例え.jp"], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [message] = sink.wait_for(to="zoë@例え.jp")
    assert message.raw == raw
    assert message.subject == "Grüße"
    assert message.mail_from == "jörg@münchen.example"
    assert "Überwachung" in (message.text or "")


def test_filters_and_newest_first(sink: SinkServer) -> None:
    send(sink, wire(build(to="ana@example.org", subject="Welcome Ana")), to="ana@example.org")
    send(
        sink,
        wire(build(to="bob@example.org", subject="Digest")),
        to="bob@example.org",
        sender="bounce@x.example",
    )
    sink.wait_for(count=2)
    assert [m.subject for m in sink.messages()] == ["Digest", "Welcome Ana"]
    assert [m.subject for m in sink.messages(to="ana@example.org")] == ["Welcome Ana"]
    assert sink.messages(to="na@example.org") == []  # an address must match whole
    assert [m.subject for m in sink.messages(to="*@example.org")] == ["Digest", "Welcome Ana"]
    assert [m.subject for m in sink.messages(sender="bounce@x.example")] == ["Digest"]
    assert [m.subject for m in sink.messages(subject="welcome")] == ["Welcome Ana"]
    oldest = sink.messages()[-1]
    assert [m.subject for m in sink.messages(since=oldest.received_at)] == ["Digest"]
    assert sink.messages(since=datetime.now(UTC)) == []


def test_wait_for_wakes_on_arrival_and_times_out(sink: SinkServer) -> None:
    results: list[list[StoredMessage]] = []
    waiter = threading.Thread(target=lambda: results.append(sink.wait_for(to="late@example.org", timeout=10)))
    waiter.start()
    send(sink, wire(build(to="late@example.org")), to="late@example.org")
    waiter.join(10)
    assert not waiter.is_alive()
    assert [m.rcpt_tos for m in results[0]] == [("late@example.org",)]
    with pytest.raises(TimeoutError, match="found 0"):
        sink.wait_for(to="never@example.org", timeout=0.2)
    with pytest.raises(TimeoutError, match="found 1"):
        sink.wait_for(to="late@example.org", count=2, timeout=0.2)


def test_delete_and_clear(sink: SinkServer, maildir: Path) -> None:
    for n in range(3):
        send(sink, wire(build(subject=f"d{n}")))
    first, second, third = sink.wait_for(count=3)
    assert sink.delete(second.id) is True
    assert sink.delete(second.id) is False
    with pytest.raises(MessageGoneError):
        sink.get(second.id)
    assert [m.id for m in sink.messages()] == [first.id, third.id]
    assert sink.clear() == 2
    assert sink.messages() == []
    sink.flush()
    assert list((maildir / "new").iterdir()) == []


def test_on_message_callback(maildir: Path) -> None:
    seen: list[str] = []
    with SinkServer(maildir=maildir, on_message=lambda m: seen.append(m.subject)) as sink:
        send(sink, wire(build(subject="hello callback")))
        sink.wait_for()
    assert seen == ["hello callback"]


def test_a_failing_callback_does_not_refuse_mail(maildir: Path) -> None:
    def explode(message: StoredMessage) -> None:
        raise RuntimeError("observer bug")

    with SinkServer(maildir=maildir, on_message=explode) as sink:
        send(sink, wire(build()))
        assert len(sink.wait_for()) == 1


def test_port_zero_picks_a_port_and_busy_ports_are_reported(maildir: Path, tmp_path: Path) -> None:
    with SinkServer(maildir=maildir) as sink:
        assert sink.smtp_port > 0
        with socket.create_connection((sink.host, sink.port), timeout=5) as conn:
            assert conn.recv(100).startswith(b"220 ")
        with pytest.raises(ListenError, match="--smtp-port"):
            SinkServer(maildir=tmp_path / "other", smtp_port=sink.smtp_port).start()


def test_not_started_is_a_clear_error(maildir: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        SinkServer(maildir=maildir).smtp_port
