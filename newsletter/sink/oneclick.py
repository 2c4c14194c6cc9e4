"""Act as the mailbox provider: RFC 8058 one-click unsubscribe, the way Gmail performs it.

Gmail (and Yahoo) POST to the https URI of List-Unsubscribe with the body
`List-Unsubscribe=One-Click` (application/x-www-form-urlencoded), send no cookies, and do
not follow redirects: the endpoint must answer 2xx itself. We do the same and report what
happened, so a developer sees exactly what a provider would see.

Safety: the POST goes only to loopback hosts unless the sink was started with
`allow_remote_one_click=True` (CLI `--allow-remote-one-click`). Plain http is accepted for
loopback targets (the project's web app runs on http://127.0.0.1:PORT in tests) with a
"not https" warning, since a provider would refuse it. Never the sink itself: a URI on any of
the sink's own ports at a loopback, unspecified (0.0.0.0) or listen address -- or a name that
resolves to one -- is refused, so a message cannot make the sink delete its own mail.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from newsletter.sink.errors import OneClickError
from newsletter.sink.message import StoredMessage
from newsletter.sink.net import is_loopback

BODY = b"List-Unsubscribe=One-Click"
USER_AGENT = "newsletter-sink one-click (RFC 8058, as a mailbox provider)"
_EXCERPT = 200


@dataclass(frozen=True)
class OneClickResult:
    """What the unsubscribe endpoint answered. `ok` means a provider would count it done."""

    url: str
    status_code: int | None
    redirected: bool
    location: str | None
    body_excerpt: str
    warnings: tuple[str, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status_code": self.status_code,
            "redirected": self.redirected,
            "location": self.location,
            "body_excerpt": self.body_excerpt,
            "warnings": list(self.warnings),
            "error": self.error,
            "ok": self.ok,
        }


def _reaches_this_machine(host: str, own_host: str | None) -> bool:
    """True if `host` is loopback, unspecified, the sink's listen address, or resolves to one."""
    host = host.strip("[]").lower()
    own = (own_host or "").strip("[]").lower()

    def local(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return ip.is_loopback or ip.is_unspecified or address == own

    if is_loopback(host) or local(host) or (own and host == own):
        return True
    try:
        ipaddress.ip_address(host)
        return False  # an address literal that is none of ours
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False  # unresolvable: the POST will fail on its own
    return any(local(str(info[4][0])) for info in infos)


def choose_target(
    message: StoredMessage,
    *,
    allow_remote: bool,
    own_ports: frozenset[int] = frozenset(),
    own_host: str | None = None,
) -> tuple[str, list[str]]:
    """The URI a provider would POST to, plus warnings. `OneClickError` if there is none, or if
    it is not allowed (a remote host without `allow_remote`; the sink itself: `own_ports`)."""
    url, warnings = _unsubscribe_uri(message)
    _refuse_target(url, allow_remote=allow_remote, own_ports=own_ports, own_host=own_host)
    return url, warnings


def _unsubscribe_uri(message: StoredMessage) -> tuple[str, list[str]]:
    """The first https (else http) URI of List-Unsubscribe, plus warnings about what a provider
    would mind; `OneClickError` if the header or such a URI is missing."""
    warnings: list[str] = []
    header = message.headers.get("List-Unsubscribe")
    if header is None:
        raise OneClickError("the message has no List-Unsubscribe header; nothing to click")
    uris = [u.strip() for u in re.findall(r"<([^<>]*)>", str(header))]
    https = [u for u in uris if u.lower().startswith("https://")]
    http = [u for u in uris if u.lower().startswith("http://")]
    post = message.headers.get("List-Unsubscribe-Post")
    if post is None or str(post).strip() != "List-Unsubscribe=One-Click":
        warnings.append("no valid List-Unsubscribe-Post header: a provider would not offer one-click")
    if https:
        return https[0], warnings
    if http:
        return http[0], warnings + ["not https: a provider requires an https URI"]
    raise OneClickError("List-Unsubscribe has no http(s) URI in <angle brackets>; nothing to POST to")


def _refuse_target(url: str, *, allow_remote: bool, own_ports: frozenset[int], own_host: str | None) -> None:
    """`OneClickError` (refused_target where the URI itself is not allowed) for a bad port, the
    sink itself, a remote host without `allow_remote`, or plain http to a remote host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise OneClickError(f"{url!r} has an invalid port; nothing to POST to") from None
    # Checked by port first, so names are resolved only when they could be the sink.
    if port in own_ports and _reaches_this_machine(host, own_host):
        raise OneClickError(
            f"{url!r} is the sink itself (port {port}); one-click never POSTs to the sink",
            refused_target=True,
        )
    if not is_loopback(host):
        if not allow_remote:
            raise OneClickError(
                f"{host or url!r} is not a loopback host;"
                " start the sink with --allow-remote-one-click to POST there",
                refused_target=True,
            )
        if not url.lower().startswith("https://"):
            raise OneClickError(
                f"{url!r} is plain http on a remote host; a provider would never POST there",
                refused_target=True,
            )


def perform_one_click(
    message: StoredMessage,
    *,
    allow_remote: bool = False,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    own_ports: frozenset[int] = frozenset(),
    own_host: str | None = None,
) -> OneClickResult:
    """POST `List-Unsubscribe=One-Click` to the message's unsubscribe URI, like Gmail.

    `transport` lets a caller route the request elsewhere (an httpx transport). Network
    errors are reported in the result (`error`), not raised; `OneClickError` is raised when
    there is nothing to click or the target is not allowed.
    """
    url, warnings = choose_target(message, allow_remote=allow_remote, own_ports=own_ports, own_host=own_host)
    # A fresh client per click: no cookie jar, no proxies from the environment, no redirects.
    with httpx.Client(
        follow_redirects=False, timeout=timeout, trust_env=False, transport=transport
    ) as client:
        try:
            response = client.post(
                url,
                content=BODY,
                headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
            )
        except httpx.HTTPError as exc:
            return OneClickResult(url, None, False, None, "", tuple(warnings), f"{type(exc).__name__}: {exc}")
    redirected = response.is_redirect or 300 <= response.status_code < 400
    if redirected:
        warnings.append(
            "the endpoint redirected: providers do not follow redirects, the unsubscribe may not count"
        )
    elif not 200 <= response.status_code < 300:
        warnings.append(f"HTTP {response.status_code}: a provider would treat the unsubscribe as failed")
    excerpt = " ".join(response.text.split())[:_EXCERPT]
    return OneClickResult(
        url=url,
        status_code=response.status_code,
        redirected=redirected,
        location=response.headers.get("location"),
        body_excerpt=excerpt,
        warnings=tuple(warnings),
    )
