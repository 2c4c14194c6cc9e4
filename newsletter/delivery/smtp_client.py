"""One SMTP connection that reports exactly where a send failed.

``smtplib.sendmail`` cannot tell "refused" from "connection lost after the
data went out"; the difference decides between retrying and recording the row
as unknown (the server may have it). So the transaction is driven step by step,
and the session's own steps are named (connect, helo, tls, auth): a refusal there
is about us, never about the reader (see ``delivery.judgement``).

We greet with ``smtp.helo_name``, else this host's fully-qualified name.
"""

from __future__ import annotations

import enum
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.config import LOOPBACK_HOSTS, SmtpSettings
from newsletter.delivery.message import dot_stuff
from newsletter.errors import ConfigError

# smtplib asks socket.getfqdn() on every connect (a DNS round trip); ask once per process.
LOCAL_HOSTNAME = socket.getfqdn()


def helo_name(settings: SmtpSettings) -> str:
    """The name we greet with: ``smtp.helo_name``, else the host's FQDN.

    ConfigError when that default is 'localhost' (or not fully qualified) and the server is
    not on loopback: strict servers refuse every message then (an explicit setting is
    checked when the configuration loads).
    """
    if settings.helo_name:
        return settings.helo_name
    remote = settings.host not in LOOPBACK_HOSTS and not settings.host.startswith("127.")
    if remote and (LOCAL_HOSTNAME.lower().split(".")[0] == "localhost" or "." not in LOCAL_HOSTNAME):
        raise ConfigError(
            f"this host calls itself {LOCAL_HOSTNAME!r}, a HELO name {settings.host} will refuse or distrust",
            hint="Set smtp.helo_name (NEWSLETTER_SMTP_HELO_NAME) to this host's public, fully-qualified name,"
            " e.g. mail.example.com.",
        )
    return LOCAL_HOSTNAME


class Result(str, enum.Enum):
    SENT = "sent"
    TRANSIENT = "transient"  # not delivered, try again later (4xx, lost before data)
    PERMANENT = "permanent"  # refused for good (5xx)
    UNKNOWN = "unknown"  # data sent, reply lost: the server may have it


@dataclass(frozen=True)
class Attempt:
    result: Result
    code: int | None = None
    reply: str = ""
    stage: str = ""  # connect, helo, tls, auth (the session); mail, rcpt, data, content, reply (the message)
    connection_problem: bool = False  # the connection, not the recipient, is at fault (421, refused, timeout)


class SmtpConnection:
    """A lazily opened, reusable SMTP session for one sender thread."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self.sent = 0  # messages accepted on the current connection
        self._step = "connect"  # the session step in progress, for Attempt.stage
        self._stage = "connect"  # the step of the message in progress (the session's while connecting)
        self.parks = (
            0  # times in a row this connection was refused while others were live (the sender's pool)
        )

    @property
    def connected(self) -> bool:
        return self._smtp is not None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        name = helo_name(s)
        context = ssl.create_default_context()  # certificates and host names verified
        self._step = "connect"
        if s.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.port, timeout=s.timeout, context=context, local_hostname=name
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout, local_hostname=name)
        try:
            self._greet(smtp)
            if s.security == "starttls":
                self._step = "tls"
                smtp.starttls(context=context)
                self._greet(smtp)
            if s.username:
                self._step = "auth"
                smtp.login(s.username, s.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _greet(self, smtp: smtplib.SMTP) -> None:
        """EHLO, else HELO; a refusal of both is an SMTPResponseException at step 'helo'."""
        self._step = "helo"
        code, reply = smtp.ehlo()
        if code == 250:
            return
        code, reply = smtp.helo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                try:
                    self._smtp.close()
                except OSError:
                    pass
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            except OSError:
                pass
        self._smtp = None

    def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        *,
        before_content: Callable[[], None] | None = None,
        dot_stuffed: bool = False,
    ) -> Attempt:
        """Deliver one message to one recipient; never raises for SMTP or network trouble.

        ``dot_stuffed``: ``data`` already has its leading dots doubled (and ends with CRLF).

        ``before_content`` runs right before the message data is written, so the
        caller can journal that the outcome may become unknown from here on.
        """
        self._stage = "connect"
        try:
            if self._smtp is None:
                self.sent = 0
                try:
                    self._smtp = self._connect()
                finally:
                    self._stage = self._step
            smtp = self._smtp
            self._stage = "mail"
            options = ["SMTPUTF8"] if not (mail_from.isascii() and rcpt.isascii()) else []
            if smtp.has_extn("pipelining"):
                refused = self._pipelined(smtp, _envelope(smtp, mail_from, rcpt, options))
            else:
                refused = self._step_by_step(smtp, mail_from, rcpt, options)
            if refused is not None:
                return refused
            payload = data if dot_stuffed else dot_stuff(data)
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            if before_content is not None:
                before_content()
            self._stage = "content"
            smtp.send(payload + b".\r\n")
            self._stage = "reply"
            code, reply = smtp.getreply()
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            return Attempt(
                Result.TRANSIENT, exc.smtp_code, _text(exc.smtp_error), "auth", connection_problem=True
            )
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            return self._lost(exc)
        if 200 <= code < 300:
            self.sent += 1
            return Attempt(Result.SENT, code, _text(reply), "data")
        return self._refused(code, reply, "data")

    def _pipelined(self, smtp: smtplib.SMTP, envelope: bytes) -> Attempt | None:
        """RFC 2920: MAIL, RCPT and DATA in one write, their replies read in order; two round trips
        per message instead of four (Postfix and most relays offer it). None: DATA may follow."""
        smtp.send(envelope)
        refused: tuple[int, bytes, str] | None = None
        for stage, accepted in (("mail", (250,)), ("rcpt", (250, 251)), ("data", (354,))):
            self._stage = stage
            code, reply = smtp.getreply()
            if code in (421, -1):  # the server is closing: nothing more will come
                return self._refused(code, reply, stage)
            if refused is None and code not in accepted:
                refused = (code, reply, stage)
        if refused is None:
            return None
        if code == 354:
            # DATA accepted although the envelope was refused (RFC 2920 says it must
            # not be): end the empty message so the session stays in step.
            smtp.send(b".\r\n")
            smtp.getreply()
        return self._refused(*refused)

    def _step_by_step(
        self, smtp: smtplib.SMTP, mail_from: str, rcpt: str, options: list[str]
    ) -> Attempt | None:
        """MAIL, RCPT and DATA one round trip each. None: DATA may follow."""
        code, reply = smtp.mail(mail_from, options)
        if code != 250:
            return self._refused(code, reply, "mail")
        self._stage = "rcpt"
        code, reply = smtp.rcpt(rcpt)
        if code not in (250, 251):
            return self._refused(code, reply, "rcpt")
        self._stage = "data"
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            return self._refused(code, reply, "data")
        return None

    def _lost(self, exc: BaseException) -> Attempt:
        """The attempt when the network, TLS or the session failed at ``self._stage``: the message's
        outcome is unknown once its data was sent, else the connection is to blame (transient)."""
        self._drop()
        stage = self._stage
        failure_code: int | None = getattr(exc, "smtp_code", None)
        if isinstance(exc, ssl.SSLError | ssl.CertificateError | smtplib.SMTPNotSupportedError) and stage in (
            "connect",
            "helo",
            "tls",
        ):
            stage = "tls"  # a handshake or STARTTLS mismatch: smtp.security, not the network
        text = _text(getattr(exc, "smtp_error", b"")) or f"{exc.__class__.__name__}: {exc}"
        if stage in ("content", "reply"):
            return Attempt(
                Result.UNKNOWN,
                failure_code,
                f"connection lost after the message data was sent ({text})",
                stage,
                connection_problem=True,
            )
        return Attempt(Result.TRANSIENT, failure_code, text, stage, connection_problem=True)

    def _refused(self, code: int, reply: bytes | str, stage: str) -> Attempt:
        text = _text(reply)
        if code == 421 or code == -1:
            # The server is closing or throttling this connection: back off, blame nobody.
            self._drop()
            return Attempt(Result.TRANSIENT, code, text, stage, connection_problem=True)
        try:
            self._smtp.rset()  # type: ignore[union-attr]
        except (smtplib.SMTPException, OSError):
            self._drop()
        if 400 <= code < 500:
            return Attempt(Result.TRANSIENT, code, text, stage)
        return Attempt(Result.PERMANENT, code, text, stage)


def _envelope(smtp: smtplib.SMTP, mail_from: str, rcpt: str, options: list[str]) -> bytes:
    """MAIL, RCPT and DATA as one write, formed and checked exactly as ``smtplib`` forms and
    checks them one by one (SMTPUTF8 only when offered; no CR or LF inside a command)."""
    if options and not smtp.has_extn("smtputf8"):
        raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
    extra = " " + " ".join(options) if options and smtp.does_esmtp else ""
    commands = (
        f"MAIL FROM:{smtplib.quoteaddr(mail_from)}{extra}\r\nRCPT TO:{smtplib.quoteaddr(rcpt)}\r\nDATA\r\n"
    )
    if commands.count("\r") != 3 or commands.count("\n") != 3:
        raise ValueError("prohibited newline characters in an SMTP command")
    return commands.encode("utf-8" if options else "ascii")


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())[:500]
