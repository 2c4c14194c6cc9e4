"""DKIM checks of each stored message, as a mailbox provider makes them (dkimpy).

Two checks: ``dkim`` verifies every DKIM-Signature (and says whether the body or a signed
header changed, or the key is missing), ``dkim-alignment`` says whether a valid signature's
d= aligns with the From domain (DMARC, relaxed). An unsigned message passes both with a
note: the sink also receives mail from senders that do not sign.

Where public keys come from, first that applies:
- ``use_keys({"sel._domainkey.example.com": "v=DKIM1; k=ed25519; p=..."})`` or the file named
  by ``SINK_DKIM_KEYS`` (one ``name record`` per line): keys given directly;
- ``use_dns("127.0.0.1:5353")`` or ``SINK_DKIM_DNS=host[:port]``: that name server;
- else the system resolver.
Stands alone: imports nothing from the rest of ``newsletter``. dkimpy and dnspython load on
the first signed message, not at import (they cost about 0.3 s of imports, and every
`StoredMessage` imports the checks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from email.utils import getaddresses
from typing import TYPE_CHECKING

from newsletter.sink.check_result import Check, Checkable, failed, passed

if TYPE_CHECKING:
    import dns.resolver

DNS_TIMEOUT = 3.0
KeyLookup = Callable[..., bytes | None]
_source: dict[str, KeyLookup | None] = {"lookup": None}
_quiet = logging.getLogger("newsletter.sink.dkim.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def use_keys(records: Mapping[str, str]) -> None:
    """Verify against these TXT records (name -> record) instead of DNS."""
    table = {name.lower().rstrip("."): record.encode("ascii") for name, record in records.items()}
    _source["lookup"] = lambda name, timeout=5: table.get(name.decode("ascii").lower().rstrip("."))


def use_dns(server: str | None) -> None:
    """Ask this name server (host[:port]); None: back to the environment / system resolver."""
    _source["lookup"] = _dns_lookup(server) if server else None


def _dns_lookup(server: str) -> KeyLookup:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    host, port = server, 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif server.count(":") == 1:
        host, _, number = server.partition(":")
        port = int(number)
    resolver.nameservers, resolver.port = [host], port
    resolver.timeout = resolver.lifetime = DNS_TIMEOUT
    return lambda name, timeout=5: _txt(resolver, name)


def _txt(resolver: dns.resolver.Resolver, name: bytes) -> bytes | None:
    import dns.exception
    import dns.resolver

    try:
        answers = resolver.resolve(name.decode("ascii"), "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException:
        return None
    for answer in answers:
        return b"".join(answer.strings)
    return None


def _lookup() -> KeyLookup:
    chosen = _source["lookup"]
    if chosen is not None:
        return chosen
    if os.environ.get("SINK_DKIM_KEYS"):
        with open(os.environ["SINK_DKIM_KEYS"], encoding="utf-8") as f:
            records = dict(
                line.strip().split(None, 1) for line in f if line.strip() and not line.startswith("#")
            )
        return lambda name, timeout=5: (
            records.get(name.decode("ascii").rstrip("."), "").encode("ascii") or None
        )
    if os.environ.get("SINK_DKIM_DNS"):
        return _dns_lookup(os.environ["SINK_DKIM_DNS"])
    import dns.resolver

    resolver = dns.resolver.Resolver()
    resolver.timeout = resolver.lifetime = DNS_TIMEOUT
    return lambda name, timeout=5: _txt(resolver, name)


# -- one signature -----------------------------------------------------------------------------------


def _tag(signature: bytes, name: bytes) -> bytes:
    found = re.search(rb"(?:^|;)\s*" + name + rb"\s*=\s*([^;]*)", signature)
    return re.sub(rb"\s+", b"", found.group(1)) if found else b""


def _verify(raw: bytes, index: int, lookup: KeyLookup) -> tuple[bool, str, str]:
    """(valid, d=, why) for the index-th signature."""
    import dkim

    checker = dkim.DKIM(raw, logger=_quiet)
    header = [value for name, value in checker.headers if name.lower() == b"dkim-signature"][index]
    domain = _tag(header, b"d").decode("ascii", "replace")
    selector = _tag(header, b"s").decode("ascii", "replace")
    algorithm = _tag(header, b"a").decode("ascii", "replace")
    where = f"{algorithm} d={domain} s={selector}"
    name = f"{selector}._domainkey.{domain}".encode("ascii", "replace")
    if not lookup(name):
        return False, domain, f"{where}: no key published at {name.decode()} (key not found)"
    try:
        ok = checker.verify(index, dnsfunc=lookup)
    except dkim.DKIMException as exc:
        text = str(exc)
        if "body hash mismatch" in text:
            return False, domain, f"{where}: the body changed after signing (body hash mismatch)"
        return False, domain, f"{where}: {text}"
    if ok:
        return True, domain, f"{where}: valid"
    signed = _tag(header, b"h").decode("ascii", "replace").replace(":", ", ")
    return (
        False,
        domain,
        f"{where}: a signed header changed after signing"
        f" (signature does not match; signed: {signed}) or the published key is not the signing key",
    )


def _results(m: Checkable) -> list[tuple[bool, str, str]]:
    """Every signature's verdict, computed once per message."""
    raw = m.raw
    count = len(re.findall(rb"(?im)^dkim-signature\s*:", raw.split(b"\r\n\r\n", 1)[0]))
    if not count:
        return []
    # The verdict depends on where keys come from too: a test may switch sources between looks.
    key = (
        hashlib.sha256(raw).hexdigest(),
        id(_source["lookup"]),
        os.environ.get("SINK_DKIM_KEYS"),
        os.environ.get("SINK_DKIM_DNS"),
    )
    cached = _cache.get(key)
    if cached is None:
        lookup = _lookup()
        cached = [_verify(raw, i, lookup) for i in range(count)]
        if len(_cache) > 512:
            _cache.clear()
        _cache[key] = cached
    return cached


_cache: dict[tuple[object, ...], list[tuple[bool, str, str]]] = {}


def check_dkim(m: Checkable) -> Check:
    name = "dkim"
    results = _results(m)
    if not results:
        return passed(name, "not signed (no DKIM-Signature): Gmail and Yahoo want bulk mail signed")
    bad = [why for ok, _, why in results if not ok]
    if bad:
        return failed(name, "; ".join(bad))
    return passed(name, "; ".join(why for _, _, why in results))


def _organizational(domain: str) -> str:
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def check_dkim_alignment(m: Checkable) -> Check:
    name = "dkim-alignment"
    results = _results(m)
    if not results:
        return passed(name, "not signed: nothing to align")
    addresses = [addr for _, addr in getaddresses([m.from_]) if "@" in addr]
    if len(addresses) != 1:
        return failed(name, f"From has {len(addresses)} addresses; DMARC needs exactly one")
    from_domain = addresses[0].rsplit("@", 1)[1].lower()
    valid = [domain for ok, domain, _ in results if ok]
    if not valid:
        return failed(name, f"no valid signature, so DKIM cannot align with From {from_domain}")
    aligned = [d for d in valid if _organizational(d) == _organizational(from_domain)]
    if not aligned:
        return failed(
            name,
            f"valid signature(s) for d={', '.join(valid)}, not the From domain {from_domain}:"
            " DMARC fails on DKIM",
        )
    exact = from_domain in (d.lower() for d in aligned)
    return passed(
        name, f"d={aligned[0]} {'equals' if exact else 'aligns (relaxed) with'} the From domain {from_domain}"
    )


DKIM_CHECKS: tuple[Callable[[Checkable], Check], ...] = (check_dkim, check_dkim_alignment)
DKIM_CHECK_NAMES: tuple[str, ...] = ("dkim", "dkim-alignment")
__all__ = ["DKIM_CHECKS", "DKIM_CHECK_NAMES", "use_dns", "use_keys"]
