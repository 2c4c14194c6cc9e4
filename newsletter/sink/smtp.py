"""The SMTP side of the sink: an aiosmtpd session class and the handler that stores mail.

`SinkSMTP` changes three things in aiosmtpd's `SMTP`:

* DATA is read in one `readuntil(CRLF "." CRLF)` instead of line by line. aiosmtpd's
  per-line loop is most of its cost; the sink must out-receive MailDev. The end of data is
  still only CRLF "." CRLF (no SMTP smuggling through bare LF), dot-stuffing is undone only
  after CRLF, exactly like aiosmtpd, and the bytes are otherwise kept as sent -- lines over
  1000 octets or bare LF are stored (and flagged by the checks) rather than refused.
* A bigger stream buffer, so the transport is not paused every 2 KB.
* `push` honours two flags the fault handler sets: drop the connection instead of replying,
  and close it right after replying (421, per-connection message cap).

Its handler also offers PIPELINING in the EHLO reply (unless the server's ``pipelining`` is
off), so clients are tested on the path they take with Postfix.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from newsletter.sink.faults import PROCEED, Decision, FaultSet
from newsletter.sink.storage import MaildirStore

log = logging.getLogger(__name__)

_END = b"\r\n.\r\n"
# A plain <local@domain> (dot-atom local part, LDH domain): the common case, which needs
# none of the RFC 5322 machinery aiosmtpd otherwise runs on every MAIL and RCPT.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ANGLE_ADDR = re.compile(
    rf"\s*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)", re.DOTALL
)


class SinkSMTP(SMTP):
    """One SMTP connection to the sink."""

    # Used by aiosmtpd as the StreamReader limit; commands are still capped at 512 octets
    # by command_size_limits, so this only widens the read buffer.
    line_length_limit = 256 * 1024

    def __init__(self, handler: SinkHandler, *, data_size_limit: int, hostname: str) -> None:
        super().__init__(
            handler,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,  # aiosmtpd would call getfqdn() per connection otherwise
            ident="newsletter sink",
        )
        self.drop_before_reply = False
        self.close_after_reply = False
        self.accepted_on_connection = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Replies go out as written. asyncio turns Nagle off only for sockets made with
        # IPPROTO_TCP, not for those accepted from socket.create_server: with Nagle on, the
        # second reply to a pipelined MAIL, RCPT, DATA (and each line of the EHLO reply after
        # the first) waited for the client's delayed ACK, 40 ms a message.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_ANGLE_ADDR.fullmatch(arg) if arg else None
        if match is None or self.local_part_limit:
            return super()._getaddr(arg)
        return match.group(1), match.group(2).lstrip()

    async def push(self, status: Any) -> None:
        if self.drop_before_reply:
            self.drop_before_reply = False
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)
        if self.close_after_reply:
            self.close_after_reply = False
            if self.transport is not None:
                self.transport.close()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")

        try:
            content, too_big = await self._read_data()
        except asyncio.IncompleteReadError:
            return  # the client went away mid-DATA; nothing to store
        except asyncio.CancelledError:
            self._writer.close()
            raise
        if too_big:
            self._set_post_data_state()
            await self.push("552 5.3.4 Error: message size exceeds fixed maximum message size")
            return
        # Undo dot-stuffing (RFC 5321 4.5.2): a leading "." is removed from every line.
        if content.startswith(b"."):
            content = content[1:]
        if b"\r\n." in content:
            content = content.replace(b"\r\n.", b"\r\n")
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _read_data(self) -> tuple[bytes, bool]:
        """Read DATA up to CRLF "." CRLF; return (bytes before the dot line, too_big).

        The returned bytes keep the CRLF that precedes the final dot (as aiosmtpd does) and
        are still dot-stuffed. Over the size limit, reading continues to the end (RFC 5321
        4.2.5) but nothing is kept.
        """
        reader = self._reader
        limit = self.data_size_limit
        # Start with the CRLF that ended the DATA command, so "." CRLF right away ends an
        # empty message. While the bytes consumed so far end in a partial end-marker, read
        # exactly what would complete it -- never more, or we would wait for bytes the client
        # will not send before our reply.
        head = b"\r\n"
        while True:
            if head.endswith(_END):
                return head[2:-3], len(head) - 5 > (limit or len(head))
            partial = _partial_end(head)
            if not partial:
                break
            head += await reader.readexactly(len(_END) - partial)
        chunks = [head[2:]]
        size = len(head) - 2
        too_big = False
        while True:
            try:
                chunk = await reader.readuntil(_END)
                done = True
            except asyncio.LimitOverrunError as exc:
                # No marker in the buffer yet; take what cannot contain its start.
                chunk = await reader.read(exc.consumed)
                done = False
            if done:
                chunk = chunk[:-3]  # keep the CRLF before the dot
            size += len(chunk)
            if limit and size > limit:
                too_big = True
                chunks.clear()
            elif not too_big:
                chunks.append(chunk)
            if done:
                return b"".join(chunks), too_big


def _partial_end(data: bytes) -> int:
    """Length of the longest proper prefix of the end marker that `data` ends with."""
    for n in range(len(_END) - 1, 0, -1):
        if data.endswith(_END[:n]):
            return n
    return 0


class SinkHandler:
    """aiosmtpd handler: consults the faults at each stage and stores accepted messages."""

    def __init__(
        self, store: MaildirStore, faults: FaultSet, *, pipelining: Callable[[], bool] = lambda: True
    ) -> None:
        self.store = store
        self.faults = faults
        self.pipelining = pipelining

    async def handle_EHLO(
        self, server: SinkSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Offer PIPELINING (RFC 2920) as Postfix does: aiosmtpd answers commands strictly in
        order from its read buffer, so a client may send MAIL, RCPT and DATA in one write."""
        session.host_name = hostname  # this hook replaces aiosmtpd's own bookkeeping
        if self.pipelining():
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def _apply(self, server: SinkSMTP, decision: Decision) -> str | None:
        """Carry out a fault decision; return the reply to send, or None to proceed."""
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.drop:
            server.drop_before_reply = True
            return "451 dropped"  # never sent: push() closes the connection instead
        if decision.reply is not None:
            server.close_after_reply = decision.closes
            return decision.reply
        return None

    async def handle_MAIL(
        self, server: SinkSMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        decision = self.faults.decide("mail", sender=address, recipients=())
        if decision is not PROCEED:
            reply = await self._apply(server, decision)
            if reply is not None:
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SinkSMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        decision = self.faults.decide("rcpt", sender=envelope.mail_from or "", recipients=(address,))
        if decision is not PROCEED:
            reply = await self._apply(server, decision)
            if reply is not None:
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SinkSMTP, session: Session, envelope: Envelope) -> str:
        decision = self.faults.decide("data", sender=envelope.mail_from or "", recipients=envelope.rcpt_tos)
        if decision is not PROCEED and not decision.drop_after_store:
            reply = await self._apply(server, decision)
            if reply is not None:
                return reply
        elif decision.delay:
            await asyncio.sleep(decision.delay)
        raw = envelope.original_content or b""
        try:
            message = self.store.add(envelope.mail_from or "", envelope.rcpt_tos, raw)
        except OSError as exc:
            log.error("sink could not store a message: %s", exc)
            return f"451 4.3.0 Sink could not store the message: {exc.strerror or exc}"
        if decision.drop_after_store:
            # The message is kept but the client never hears 250: outcome unknown to it.
            server.drop_before_reply = True
            return "250 dropped"
        server.accepted_on_connection += 1
        close_after = self.faults.close_after
        if close_after is not None and server.accepted_on_connection >= close_after:
            server.close_after_reply = True
        return f"250 2.0.0 OK: queued as {message.id}"
