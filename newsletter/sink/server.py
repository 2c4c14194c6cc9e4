"""`SinkServer`: the local SMTP sink -- receive, store, check, misbehave on request.

The SMTP server runs on its own event loop in a background thread; the optional viewer
(Starlette under uvicorn) runs in another. Every public method is safe to call from any
thread, so a test can send with smtplib and assert with `wait_for` in the same thread.

Ports: 0 means "any free port". The listening socket is bound here, before the server
starts, so the chosen port is known (aiosmtpd's Controller cannot report it) and there is
no window in which another process could take it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from newsletter.sink.cache import DEFAULT_PARSED_CACHE
from newsletter.sink.errors import MessageGoneError
from newsletter.sink.faults import FaultSet
from newsletter.sink.message import StoredMessage, matches
from newsletter.sink.net import bind_listener
from newsletter.sink.smtp import SinkHandler, SinkSMTP
from newsletter.sink.storage import MaildirStore

if TYPE_CHECKING:
    from newsletter.sink.oneclick import OneClickResult
    from newsletter.sink.viewer import ViewerThread

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024


class SinkServer:
    """A local SMTP sink storing into `maildir`. Use as a context manager or start()/stop().

    `on_message`, if set, is called with each stored `StoredMessage` on the SMTP thread
    (keep it quick; exceptions are logged and ignored).

    Safety (see README "The local SMTP sink"): `max_messages` caps only the messages the sink
    stored itself, files already in the Maildir are never deleted; `parsed_cache` messages at
    most keep their bytes and parsed views in memory; the viewer answers loopback Host names,
    the listen address and `allowed_hosts` only, and every change through it needs `token`
    (random per run unless given) from a same-origin page.
    """

    def __init__(
        self,
        *,
        maildir: Path,
        host: str = "127.0.0.1",
        smtp_port: int = 0,
        max_messages: int = 1000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        http_port: int | None = None,
        allow_remote_one_click: bool = False,
        on_message: Callable[[StoredMessage], None] | None = None,
        parsed_cache: int = DEFAULT_PARSED_CACHE,
        allowed_hosts: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1 byte, got {max_message_size}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if parsed_cache < 1:
            raise ValueError(f"parsed_cache must be >= 1, got {parsed_cache}")
        if token is not None and len(token) < 16:
            raise ValueError("the viewer token must be at least 16 characters (omit it for a random one)")
        self.maildir = Path(maildir)
        self.host = host
        self.max_messages = max_messages
        self.max_message_size = max_message_size
        self.allow_remote_one_click = allow_remote_one_click
        self.on_message = on_message
        self.parsed_cache = parsed_cache
        self.allowed_hosts = tuple(allowed_hosts)
        self.token = token or secrets.token_urlsafe(24)
        self.faults = FaultSet()
        # Offer PIPELINING in the EHLO reply (read at each EHLO: a test may turn it off between sessions).
        self.pipelining = True
        self._requested_smtp_port = smtp_port
        self._requested_http_port = http_port
        self._smtp_port: int | None = None
        self._store: MaildirStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._viewer: ViewerThread | None = None
        self._sessions: weakref.WeakSet[SinkSMTP] = weakref.WeakSet()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> SinkServer:
        """Open the maildir, bind the ports and start serving. Returns self."""
        if self._thread is not None:
            raise RuntimeError("sink already started")
        store = MaildirStore(self.maildir, max_messages=self.max_messages, parsed_cache=self.parsed_cache)
        try:
            sock = bind_listener(self.host, self._requested_smtp_port, what="SMTP")
        except Exception:
            store.close()
            raise
        self._store = store
        self._smtp_port = sock.getsockname()[1]
        store.subscribe(self._notify)
        hostname = socket.gethostname() or "localhost"
        handler = SinkHandler(store, self.faults, pipelining=lambda: self.pipelining)

        def factory() -> SinkSMTP:
            session = SinkSMTP(handler, data_size_limit=self.max_message_size, hostname=hostname)
            self._sessions.add(session)
            return session

        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(sock, factory, ready, failure), name="sink-smtp", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            store.close()
            raise failure[0]
        if self._requested_http_port is not None:
            # Imported here so that a sink without a viewer never loads uvicorn and Starlette.
            from newsletter.sink.viewer import ViewerThread

            try:
                self._viewer = ViewerThread(self, host=self.host, port=self._requested_http_port)
                self._viewer.start()
            except Exception:
                self._viewer = None
                self.stop()
                raise
        return self

    def _run(
        self,
        sock: socket.socket,
        factory: Callable[[], SinkSMTP],
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(loop.create_server(factory, sock=sock))
        except BaseException as exc:  # reported to start() in the caller's thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def stop(self) -> None:
        """Stop serving (open connections are closed) and flush the index. Idempotent."""
        if self._viewer is not None:
            self._viewer.stop()
            self._viewer = None
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._thread = None
        self._loop = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> SinkServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------
    @property
    def smtp_port(self) -> int:
        """The SMTP port actually bound (known once started)."""
        if self._smtp_port is None:
            raise RuntimeError("sink not started: call start() first")
        return self._smtp_port

    @property
    def port(self) -> int:
        """Alias of `smtp_port`."""
        return self.smtp_port

    @property
    def http_port(self) -> int | None:
        """The viewer's port, or None when the viewer is off."""
        return self._viewer.port if self._viewer is not None else None

    @property
    def http_url(self) -> str | None:
        port = self.http_port
        if port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def store(self) -> MaildirStore:
        if self._store is None:
            raise RuntimeError("sink not started: call start() first")
        return self._store

    # -- messages ----------------------------------------------------------------------
    def messages(
        self,
        to: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        query: str | None = None,
    ) -> list[StoredMessage]:
        """Stored messages passing the filters (see `message.matches`), newest first."""
        return [
            m
            for m in self.store.newest_first()
            if matches(m, to=to, sender=sender, subject=subject, since=since, query=query)
        ]

    def get(self, msg_id: str) -> StoredMessage:
        """The message with this id; `MessageGoneError` if there is none."""
        message = self.store.get(msg_id)
        if message is None:
            raise MessageGoneError(f"no message {msg_id!r} in the sink; list them with GET /api/messages")
        return message

    def wait_for(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[StoredMessage]:
        """Block until at least `count` stored messages match; return all matches, newest first.

        Messages already stored count too, so there is no race with a send that finished
        before the call. Wakes on each receipt (no polling). Raises `TimeoutError` naming what
        was received instead.
        """
        store = self.store
        deadline = time.monotonic() + timeout
        with store.changed:
            while True:
                found = self.messages(to=to, sender=sender, subject=subject)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = (
                        ", ".join(
                            f"{m.subject!r} to {','.join(m.rcpt_tos)}" for m in store.newest_first()[:5]
                        )
                        or "nothing"
                    )
                    raise TimeoutError(
                        f"waited {timeout}s for {count} message(s) (to={to!r}, sender={sender!r}, "
                        f"subject={subject!r}), found {len(found)}; newest in the sink: {seen}"
                    )
                store.changed.wait(remaining)

    def flush(self) -> None:
        """Block until every message received so far is written to the maildir."""
        self.store.flush()

    def clear(self) -> int:
        """Delete every message the sink stored (never files it did not write); returns how many."""
        return self.store.clear()

    def delete(self, msg_id: str) -> bool:
        """Delete one message; False if it did not exist;
        `ForeignMessageError` if the sink did not store it."""
        return self.store.delete(msg_id)

    def one_click(self, msg_id: str, *, timeout: float = 10.0) -> OneClickResult:
        """Act as the mailbox provider: RFC 8058 one-click unsubscribe for this message."""
        from newsletter.sink.oneclick import perform_one_click  # httpx loads only for a one-click

        own_ports = {self.smtp_port} | ({self.http_port} if self.http_port is not None else set())
        return perform_one_click(
            self.get(msg_id),
            allow_remote=self.allow_remote_one_click,
            timeout=timeout,
            own_ports=frozenset(own_ports),
            own_host=self.host,
        )

    def _notify(self, message: StoredMessage) -> None:
        callback = self.on_message
        if callback is None:
            return
        try:
            callback(message)
        except Exception:  # a faulty observer must not make the sink refuse mail
            log.exception("sink on_message callback failed")

    def __repr__(self) -> str:
        where = f"{self.host}:{self._smtp_port}" if self._smtp_port else "not started"
        return f"<SinkServer {where} maildir={str(self.maildir)!r}>"
