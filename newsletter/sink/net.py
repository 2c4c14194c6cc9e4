"""Listening sockets for the sink's SMTP server and its viewer, and what counts as loopback."""

from __future__ import annotations

import ipaddress
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


def is_loopback(host: str) -> bool:
    """True if `host` names this machine's loopback without asking DNS.

    localhost and *.localhost (RFC 6761: browsers and resolvers keep them on loopback),
    127.0.0.0/8, ::1 and the IPv4-mapped ::ffff:127.x.y.z; brackets, case, a final dot and an
    IPv6 zone are ignored. The unspecified addresses (0.0.0.0, ::) are every interface, not
    loopback; other names are not resolved, so they are not loopback.
    """
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
