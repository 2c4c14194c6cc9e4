"""The SMTP client's two ways through a transaction: MAIL, RCPT and DATA in one write where the
server offers PIPELINING (RFC 2920, as Postfix does), one command at a time where it does not.

Each refusal the sink can give is tried both ways on one connection, followed by a good message
on the same connection: the outcome, its stage and what the server stored must not depend on
the way, and the session must stay in step after every refusal.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from newsletter.delivery.smtp_client import Attempt, Result, SmtpConnection
from newsletter.sink.faults import FaultRule
from tests.factories import build_settings

FROM = "bounces+x@news.example.org"
BODY = b"Subject: hello\r\n\r\n.a line that starts with a dot\r\nbody\r\n"
STUFFED = b"Subject: hello\r\n\r\n..a line that starts with a dot\r\nbody\r\n"

# (fault, outcome of the first message, its stage, a connection problem, what the sink keeps of it)
REFUSALS = [
    pytest.param(
        FaultRule(stage="mail", code=550, text="5.7.1 sender refused", times=1),
        Result.PERMANENT,
        "mail",
        False,
        0,
        id="mail-550",
    ),
    pytest.param(
        FaultRule(stage="mail", code=451, text="4.3.0 try later", times=1),
        Result.TRANSIENT,
        "mail",
        False,
        0,
        id="mail-451",
    ),
    pytest.param(
        FaultRule(stage="mail", code=421, text="4.3.2 closing", times=1),
        Result.TRANSIENT,
        "mail",
        True,
        0,
        id="mail-421-closes",
    ),
    pytest.param(
        FaultRule(stage="rcpt", code=550, text="5.1.1 no such user", times=1),
        Result.PERMANENT,
        "rcpt",
        False,
        0,
        id="rcpt-550",
    ),
    pytest.param(
        FaultRule(stage="rcpt", code=450, text="4.2.1 mailbox busy", times=1),
        Result.TRANSIENT,
        "rcpt",
        False,
        0,
        id="rcpt-450",
    ),
    pytest.param(
        FaultRule(stage="rcpt", action="drop", times=1), Result.TRANSIENT, "rcpt", True, 0, id="rcpt-drop"
    ),
    pytest.param(
        FaultRule(stage="data", code=554, text="5.7.1 content refused", times=1),
        Result.PERMANENT,
        "data",
        False,
        0,
        id="data-554",
    ),
    pytest.param(
        FaultRule(stage="data", action="drop_after_store", times=1),
        Result.UNKNOWN,
        "reply",
        True,
        1,
        id="data-stored-reply-lost",
    ),
]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize(("fault", "result", "stage", "connection_problem", "kept"), REFUSALS)
def test_each_refusal_is_judged_alike_both_ways_and_the_session_stays_in_step(
    sink: Any,
    tmp_path: Path,
    pipelining: bool,
    fault: FaultRule,
    result: Result,
    stage: str,
    connection_problem: bool,
    kept: int,
) -> None:
    sink.pipelining = pipelining
    sink.faults.add(fault)
    first, second = send_on_one_connection(tmp_path, sink.port, "first@example.org", "second@example.org")

    assert (first.result, first.stage, first.connection_problem) == (result, stage, connection_problem), first
    assert second.result is Result.SENT, second
    sink.flush()
    stored = sorted((tuple(m.rcpt_tos), m.raw) for m in sink.messages())
    expected = [(("first@example.org",), BODY)] * kept + [(("second@example.org",), BODY)]
    assert stored == sorted(expected)  # no empty message, no copy, dots unstuffed once


ENVELOPE = b"MAIL FROM:<bounces+x@news.example.org>\r\nRCPT TO:<ana@example.org>\r\nDATA\r\n"


def test_the_client_pipelines_where_offered_and_only_there(tmp_path: Path) -> None:
    for offered in (True, False):
        with ScriptedServer(offer_pipelining=offered) as server:
            (attempt,) = send_on_one_connection(tmp_path, server.port, "ana@example.org")
        assert attempt.result is Result.SENT, attempt
        if offered:
            assert ENVELOPE in server.chunks  # one write, before any reply
        else:
            assert (
                b"mail FROM:<bounces+x@news.example.org>\r\n" in server.chunks
            )  # alone, then its reply awaited
            assert not any(b"RCPT" in c.upper() and b"MAIL" in c.upper() for c in server.chunks)


def test_a_refused_envelope_whose_data_is_accepted_anyway_ends_the_empty_message(tmp_path: Path) -> None:
    """RFC 2920 servers refuse DATA after a refused RCPT; one that answers 354 regardless must get
    the end of an empty message, or the next command would be read as message text."""
    with ScriptedServer(
        rcpt_replies=[b"550 5.1.1 no such user\r\n"], data_after_refusal=b"354 go ahead\r\n"
    ) as server:
        refused, after = send_on_one_connection(tmp_path, server.port, "ana@example.org", "ana@example.org")
    assert (refused.result, refused.stage, refused.code) == (Result.PERMANENT, "rcpt", 550), refused
    assert after.result is Result.SENT, after
    assert server.chunks[1:4] == [ENVELOPE, b".\r\n", b"rset\r\n"]
    assert server.stored == [STUFFED]  # only the second message has content


def send_on_one_connection(tmp_path: Path, port: int, *recipients: str) -> list[Attempt]:
    """One message to each recipient in turn, on one SMTP connection; each attempt's outcome."""
    connection = SmtpConnection(build_settings(tmp_path, smtp_port=port).smtp)
    try:
        return [connection.send(FROM, rcpt, STUFFED, dot_stuffed=True) for rcpt in recipients]
    finally:
        connection.close()


class ScriptedServer:
    """A one-connection SMTP server on loopback that keeps every chunk the client wrote, as
    received: nothing is answered before a whole command arrived, so a pipelined envelope comes
    as one chunk and a one-by-one client's MAIL alone. ``rcpt_replies`` answer the first RCPTs
    (then 250); ``data_after_refusal`` answers DATA after a refused RCPT."""

    def __init__(
        self,
        *,
        offer_pipelining: bool = True,
        rcpt_replies: list[bytes] | None = None,
        data_after_refusal: bytes = b"554 5.5.1 no valid recipients\r\n",
    ) -> None:
        self.offer_pipelining = offer_pipelining
        self.rcpt_replies = list(rcpt_replies or [])
        self.data_after_refusal = data_after_refusal
        self.chunks: list[bytes] = []
        self.stored: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.error: BaseException | None = None
        self._buffer = b""

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=10)
        self.listener.close()
        assert not self.thread.is_alive(), "the client never ended the conversation"
        if self.error is not None:
            raise self.error

    def _line(self, conn: socket.socket) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError("the client closed the connection")
            self.chunks.append(chunk)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line + b"\r\n"

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.sendall(b"220 scripted ESMTP\r\n")
                self._line(conn)  # EHLO
                conn.sendall(
                    b"250-scripted\r\n"
                    + (b"250-PIPELINING\r\n" if self.offer_pipelining else b"")
                    + b"250 8BITMIME\r\n"
                )
                refused = False
                while True:
                    verb = self._line(conn)[:4].upper()
                    if verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    if verb == b"MAIL":
                        conn.sendall(b"250 ok\r\n")
                    elif verb == b"RCPT":
                        reply = self.rcpt_replies.pop(0) if self.rcpt_replies else b"250 ok\r\n"
                        refused = not reply.startswith(b"2")
                        conn.sendall(reply)
                    elif verb == b"DATA" and refused and not self.data_after_refusal.startswith(b"354"):
                        conn.sendall(self.data_after_refusal)
                    elif verb == b"DATA":
                        conn.sendall(b"354 go ahead\r\n")
                        content = b""
                        while (line := self._line(conn)) != b".\r\n":
                            content += line
                        if not refused:
                            self.stored.append(content)
                        conn.sendall(b"554 5.5.1 no valid recipients\r\n" if refused else b"250 queued\r\n")
                    elif verb == b"RSET":
                        refused = False
                        conn.sendall(b"250 reset\r\n")
                    else:
                        conn.sendall(b"500 unknown command\r\n")
        except BaseException as exc:  # raised again by __exit__, in the test's thread
            self.error = exc


def test_the_sink_offers_pipelining_unless_turned_off(sink: Any) -> None:
    import smtplib

    for offered in (True, False):
        sink.pipelining = offered
        with smtplib.SMTP("127.0.0.1", sink.port, local_hostname="client.example.org", timeout=10) as client:
            assert client.ehlo()[0] == 250
            assert client.has_extn("pipelining") is offered
            assert client.has_extn("smtputf8")  # the rest of the reply is aiosmtpd's own


def test_the_sinks_replies_leave_at_once_so_a_pipelined_envelope_is_not_held_for_a_delayed_ack(
    sink: Any,
) -> None:
    """Regression: the sink's sockets kept Nagle's algorithm on (asyncio turns it off only for
    sockets made with IPPROTO_TCP), so its second reply to a pipelined envelope waited for the
    client's delayed ACK: 44 ms a message, 89 msg/s in `bench_send.py --rate-check` against 200."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", sink.port, local_hostname="client.example.org", timeout=10) as client:
        client.ehlo()
        (session,) = [s for s in list(sink._sessions) if s.transport is not None]
        server_side = session.transport.get_extra_info("socket")
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
