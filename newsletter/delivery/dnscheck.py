"""DNS for authenticated mail: the DKIM keys, SPF, DMARC and the bounce domain's MX (dnspython).

Contract:
- ``make_resolver(server)``: the system resolver, or ``host[:port]`` (a loopback test server).
- ``key_problem(resolver, key, domain)``: None when ``<selector>._domainkey.<domain>`` publishes
  ``key``'s public half; else one line saying what is missing or different.
- ``ready_signer(settings)``: the signer ``send`` uses, after checking (once per few minutes)
  that every key is published; a ``ConfigError`` with the fix otherwise, before any mail goes out.
- ``check_dns(settings, resolver, relays)``: one ``Finding`` per record ``dns check`` looks at.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver

from newsletter.config import Settings
from newsletter.delivery.dkim import DkimSigner, signer_for
from newsletter.delivery.dkim_keys import DkimKey, dkim_domain
from newsletter.errors import ConfigError

DNS_TIMEOUT = 5.0
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
_checked: dict[tuple[str, str, str, str], float] = {}  # (selector, domain, server, p=) -> when it matched
RECHECK_SECONDS = 300.0


def make_resolver(server: str = "", *, timeout: float = DNS_TIMEOUT) -> dns.resolver.Resolver:
    """The system resolver, or one that asks only ``host[:port]``."""
    if not server:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        host, port = _host_port(server)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def _host_port(server: str) -> tuple[str, int]:
    host, port = server, 53
    if server.startswith("["):  # [::1]:5353
        host, _, rest = server[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif server.count(":") == 1:
        host, _, number = server.partition(":")
        port = int(number)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"mail.dns_server must be an IP address with an optional port, got {server!r}",
            hint="For example 127.0.0.1:5353 or [::1]:53.",
        ) from None
    return host, port


class LookupFailed(Exception):
    """The server did not answer (timeout, refused, SERVFAIL): nothing can be said about the record."""


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """Every TXT record at ``name`` (strings of one record joined); [] when there is none."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _resolve(resolver, name, "TXT")]  # type: ignore[attr-defined]


def _resolve(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> list[object]:
    try:
        return list(resolver.resolve(name, rdtype, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
        raise LookupFailed(f"no answer for {name} {rdtype}: {type(exc).__name__}") from None


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


# -- DKIM ------------------------------------------------------------------------------------------


def key_problem(resolver: dns.resolver.Resolver, key: DkimKey, domain: str) -> str | None:
    """None when the published record at the key's selector matches it; else what is wrong, with the fix."""
    name = f"{key.selector}._domainkey.{domain}"
    records = [r for r in txt_records(resolver, name) if "p=" in r]
    fix = f'publish  {name}. TXT "{key.txt_record()}"  (newsletter dkim keygen prints it)'
    if not records:
        return f"DKIM: no key published at {name}; {fix}"
    if len(records) > 1:
        return f"DKIM: {len(records)} key records at {name}, receivers may pick either; keep one: {fix}"
    tags = _tags(records[0])
    if not tags.get("p"):
        return f"DKIM: the key at {name} is revoked (empty p=); {fix}, or use another selector"
    if tags.get("k", "rsa") != key.kind:
        return (
            f"DKIM: {name} publishes a k={tags.get('k', 'rsa')} key"
            f" but mail.dkim_selector {key.selector} signs with {key.kind}; {fix}"
        )
    if tags["p"] != key.public_b64():
        return (
            f"DKIM: key mismatch at {name}: the published key is not the public half of the configured"
            f" private key; {fix}, or configure the private key that belongs to it"
        )
    return None


def ready_signer(settings: Settings) -> DkimSigner | None:
    """The signer for ``send``: keys loaded, and (``mail.dkim_check_dns``) published as configured."""
    signer = signer_for(settings)
    if signer is None or not settings.mail.dkim_check_dns:
        return signer
    resolver = None
    for key in signer.keys:
        seen = (key.selector, signer.domain, settings.mail.dns_server, key.public_b64())
        if time.monotonic() - _checked.get(seen, -RECHECK_SECONDS) < RECHECK_SECONDS:
            continue
        resolver = resolver or make_resolver(settings.mail.dns_server)
        try:
            problem = key_problem(resolver, key, signer.domain)
        except LookupFailed as exc:
            raise ConfigError(
                f"cannot check the DKIM key of selector {key.selector}: {exc}",
                hint="Check mail.dns_server (or the system resolver),"
                " or set mail.dkim_check_dns = false to send without the check.",
            ) from None
        if problem:
            raise ConfigError(
                problem,
                hint="Mail signed with this key would fail DKIM. 'newsletter dns check' lists every record;"
                " mail.dkim_check_dns = false skips this check.",
            )
        _checked[seen] = time.monotonic()
    return signer


# -- SPF -------------------------------------------------------------------------------------------


def spf_record(resolver: dns.resolver.Resolver, domain: str) -> list[str]:
    return [
        r
        for r in txt_records(resolver, domain)
        if r.lower().startswith("v=spf1") and (len(r) == 6 or r[6] == " ")
    ]


def spf_allows(
    resolver: dns.resolver.Resolver, domain: str, ip: str, budget: list[int] | None = None
) -> bool | None:
    """Whether SPF at ``domain`` passes ``ip`` (True), fails it (False), or cannot say (None).

    The mechanisms senders use: ip4, ip6, a, mx, include, redirect, all (exists and
    macros are not evaluated: None).
    """
    budget = budget if budget is not None else [SPF_LOOKUP_LIMIT]
    records = spf_record(resolver, domain)
    if len(records) != 1:
        return None
    address = ipaddress.ip_address(ip)
    redirect = ""
    for term in records[0].split()[1:]:
        qualifier = "+"
        if term[0] in "+-~?":
            qualifier, term = term[0], term[1:]
        name, _, arg = term.partition(":")
        name = name.lower()
        if name.startswith("redirect="):
            redirect = term.split("=", 1)[1]
            continue
        if "=" in name:
            continue  # exp= and unknown modifiers
        if "%" in arg or name in ("exists", "ptr"):
            return None
        hit = _spf_match(resolver, name, arg or domain, address, budget)
        if hit is None:
            return None
        if hit:
            return qualifier == "+"
    if redirect:
        budget[0] -= 1
        return spf_allows(resolver, redirect, ip, budget) if budget[0] >= 0 else None
    return False


def _spf_match(
    resolver: dns.resolver.Resolver,
    name: str,
    arg: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    budget: list[int],
) -> bool | None:
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        try:
            return address in ipaddress.ip_network(arg, strict=False)
        except ValueError:
            return None
    target, _, cidr = arg.partition("/")
    if name == "include":
        budget[0] -= 1
        return spf_allows(resolver, target, str(address), budget) is True if budget[0] >= 0 else None
    if name in ("a", "mx"):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        hosts = (
            [target]
            if name == "a"
            else [
                str(mx.exchange).rstrip(".")  # type: ignore[attr-defined]
                for mx in _resolve(resolver, target, "MX")
            ]
        )
        rdtype = "A" if address.version == 4 else "AAAA"
        for host in hosts:
            for answer in _resolve(resolver, host, rdtype):
                network = ipaddress.ip_network(
                    f"{answer}/{cidr or (32 if address.version == 4 else 128)}", strict=False
                )
                if address in network:
                    return True
        return False
    return None


# -- the whole check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One line of `dns check`: ok, warn or fail, what was looked at, and what to do."""

    status: str  # "ok" | "warn" | "fail"
    what: str
    line: str

    def render(self) -> str:
        return f"{self.status.upper():4}  {self.what}: {self.line}"


def organizational(domain: str) -> str:
    """The registrable domain, approximated by the last two labels (enough for alignment checks)."""
    labels = domain.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])


def bounce_domain(settings: Settings) -> str:
    return (settings.mail.bounce_domain or settings.mail.from_address.rsplit("@", 1)[1]).lower()


def check_dns(
    settings: Settings, resolver: dns.resolver.Resolver, relays: Sequence[str] = ()
) -> list[Finding]:
    """SPF, DKIM per selector, DMARC, the bounce domain's MX, and alignment; one finding each."""
    from_domain = settings.mail.from_address.rsplit("@", 1)[1].lower()
    bounces = bounce_domain(settings)
    found: list[Finding] = []

    def look(check: Callable[[], Finding]) -> None:
        try:
            found.append(check())
        except LookupFailed as exc:
            found.append(
                Finding(
                    "fail",
                    "DNS",
                    f"{exc}; check that the name server answers (mail.dns_server / --nameserver)",
                )
            )

    look(lambda: _check_alignment(settings, from_domain, bounces))
    look(lambda: _check_spf(resolver, bounces, relays))
    for key in _keys_or_none(settings, found):
        look(lambda key=key: _check_key(resolver, key, dkim_domain(settings)))  # type: ignore[misc]
    look(lambda: _check_dmarc(resolver, from_domain))
    look(lambda: _check_mx(resolver, bounces))
    return found


def _keys_or_none(settings: Settings, found: list[Finding]) -> list[DkimKey]:
    signer = None
    try:
        signer = signer_for(settings)
    except ConfigError as exc:
        found.append(Finding("fail", "DKIM", f"{exc.message}; {exc.hint}"))
        return []
    if signer is None:
        found.append(
            Finding(
                "fail",
                "DKIM",
                "mail is not signed (mail.dkim_selector is empty); run 'newsletter dkim keygen --selector S',"
                " publish the record it prints and set mail.dkim_selector and mail.dkim_key_file",
            )
        )
        return []
    return list(signer.keys)


def _check_key(resolver: dns.resolver.Resolver, key: DkimKey, domain: str) -> Finding:
    problem = key_problem(resolver, key, domain)
    what = f"DKIM {key.selector}._domainkey.{domain}"
    return (
        Finding("fail", what, problem.removeprefix("DKIM: "))
        if problem
        else Finding("ok", what, f"{key.kind} key published and matches the private key")
    )


def _check_alignment(settings: Settings, from_domain: str, bounces: str) -> Finding:
    signing = dkim_domain(settings)
    problems = []
    if organizational(bounces) != organizational(from_domain):
        problems.append(
            f"the bounce domain {bounces} is not under the From domain {from_domain}, so SPF does not align"
            f" for DMARC (set mail.bounce_domain to {from_domain} or a subdomain of it)"
        )
    if settings.mail.dkim_selector and organizational(signing) != organizational(from_domain):
        problems.append(
            f"DKIM signs as d={signing}, not the From domain {from_domain}, so DKIM does not align for DMARC"
            f" (set mail.dkim_domain to {from_domain})"
        )
    if problems:
        return Finding("fail", "alignment", "; ".join(problems))
    return Finding(
        "ok",
        "alignment",
        f"From {from_domain}, bounces {bounces}"
        + (f", DKIM d={signing}" if settings.mail.dkim_selector else "")
        + ": aligned",
    )


def _check_spf(resolver: dns.resolver.Resolver, domain: str, relays: Sequence[str]) -> Finding:
    what = f"SPF {domain}"
    records = spf_record(resolver, domain)
    if not records:
        return Finding(
            "fail",
            what,
            f'no SPF record; publish  {domain}. TXT "v=spf1 ip4:<your relay IP> -all"'
            "  (or your provider's include:)",
        )
    if len(records) > 1:
        return Finding(
            "fail",
            what,
            f"{len(records)} SPF records (receivers treat that as an error); merge them into one",
        )
    record = records[0]
    if not relays:
        ending = record.split()[-1].lower()
        if ending in ("+all", "all"):
            return Finding(
                "fail", what, f"'{record}' passes every server on the internet; end it with -all or ~all"
            )
        return Finding(
            "warn",
            what,
            f"'{record}' found;"
            " pass --relay <IP of the server that hands your mail out> to check that it is allowed",
        )
    refused = []
    for relay in relays:
        verdict = spf_allows(resolver, domain, relay)
        if verdict is None:
            return Finding(
                "warn",
                what,
                f"'{record}' could not be evaluated for {relay} (macros, exists or too many lookups);"
                " check it with your provider's tool",
            )
        if not verdict:
            refused.append(relay)
    if refused:
        return Finding(
            "fail",
            what,
            f"'{record}' does not include the relay {', '.join(refused)};"
            " add ip4:/ip6: for it (or your provider's include:) before the 'all'",
        )
    return Finding("ok", what, f"'{record}' passes {', '.join(relays)}")


def _check_dmarc(resolver: dns.resolver.Resolver, from_domain: str) -> Finding:
    for domain in dict.fromkeys((from_domain, organizational(from_domain))):
        records = [
            r
            for r in txt_records(resolver, f"_dmarc.{domain}")
            if r.lower().replace(" ", "").startswith("v=dmarc1")
        ]
        if records:
            policy = _tags(records[0]).get("p", "").lower()
            what = f"DMARC _dmarc.{domain}"
            if policy == "none":
                return Finding(
                    "warn",
                    what,
                    "p=none only monitors; once reports show your mail passes,"
                    " move to p=quarantine, then p=reject",
                )
            if policy not in ("quarantine", "reject"):
                return Finding(
                    "fail",
                    what,
                    f"no valid policy (p={policy or 'missing'}); write p=none, p=quarantine or p=reject",
                )
            return Finding("ok", what, f"p={policy}")
    return Finding(
        "fail",
        f"DMARC _dmarc.{from_domain}",
        "no DMARC record (Gmail and Yahoo require one of bulk senders);"
        f' publish  _dmarc.{from_domain}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}"'
        "  then tighten p=",
    )


def _check_mx(resolver: dns.resolver.Resolver, domain: str) -> Finding:
    what = f"MX {domain}"
    records = _resolve(resolver, domain, "MX")
    if not records:
        return Finding(
            "fail",
            what,
            f"no MX record, so bounces to bounces+...@{domain} cannot arrive;"
            " publish an MX pointing at the host that runs 'newsletter bounces'",
        )
    hosts = sorted(str(r.exchange).rstrip(".") for r in records)  # type: ignore[attr-defined]
    if hosts == [""]:
        return Finding(
            "fail",
            what,
            f"a null MX (RFC 7505): {domain} accepts no mail, so bounces are lost;"
            " point it at the host that runs 'newsletter bounces'",
        )
    return Finding("ok", what, ", ".join(hosts))
