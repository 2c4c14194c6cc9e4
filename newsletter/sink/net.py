"""Listening sockets for the sink's SMTP server and its viewer."""

from __future__ import annotations

import socket

from newsletter.sink.errors import ListenError


def bind_listener(host: str, port: int, *, what: str) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = pick a free one).

    Raises `ListenError` with a hint naming the flag to change.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host!r}: unknown address; use an IP such as 127.0.0.1") from exc
    except OSError as exc:
        flag = "--smtp-port" if what == "SMTP" else "--http-port"
        raise ListenError(
            f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}; "
            f"choose another {flag} (0 picks a free one)"
        ) from exc
