"""One subscriber's data made safe: the address, the name, the topics, and the add that uses them.

Addresses are normalised with email-validator (no DNS lookups unless asked).
Names and topics are single-line plain text: a CR, LF or NUL is refused, so a
value can never start a mail header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidAddress, SubscriberError
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.storage.store import Store

MAX_NAME = 200
MAX_TOPIC = 60
FORBIDDEN_CHARS = ("\r", "\n", "\x00")


def normalise_email(value: str, *, check_deliverability: bool = False) -> str:
    """The canonical (lower-case, IDNA-normalised) form of an address; InvalidAddress with the
    reason when it is not one.

    Exactly what email-validator returns, lower-cased. A plain ASCII local part at a
    domain it has already accepted (the usual address of a long list) is answered from
    ``_KNOWN_DOMAINS`` without checking the domain again; see ``_known_domain_form``.
    """
    raw = (value or "").strip()
    if any(ch in raw for ch in FORBIDDEN_CHARS):
        raise InvalidAddress("email address contains a line break or NUL character")
    if not raw:
        raise InvalidAddress("email address is empty")
    if not check_deliverability and (known := _known_domain_form(raw)):
        return known
    try:
        result = validate_email(raw, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{raw!r} is not a valid email address: {exc}") from exc
    local, _, domain = raw.rpartition("@")
    if result.original == raw and DOT_ATOM.match(local) and result.ascii_domain:
        # The domain was checked on its own (a dot-atom local part splits only one way).
        if len(_KNOWN_DOMAINS) >= MAX_KNOWN_DOMAINS:
            _KNOWN_DOMAINS.clear()
        _KNOWN_DOMAINS[domain] = (result.domain, result.ascii_domain)
    # Stored lower-case: mailbox providers ignore case in the local part, and two
    # spellings of one address must not become two subscribers.
    return result.normalized.lower()


# email-validator (not strict) accepts an RFC 5322 dot-atom local part as it is, and checks the
# domain apart from the local part; its result is local + "@" + the domain's normal form, if the
# address is at most 254 octets as given, as normalised and with the IDNA ASCII domain.
ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
DOT_ATOM = re.compile(f"[{ATEXT}]+(?:\\.[{ATEXT}]+)*\\Z")
MAX_ADDRESS_OCTETS = 254
MAX_KNOWN_DOMAINS = 10_000
_KNOWN_DOMAINS: dict[str, tuple[str, str]] = {}  # a domain as given -> (normal form, IDNA ASCII form)


def _known_domain_form(raw: str) -> str:
    """``raw`` normalised without email-validator, or '' when that needs email-validator's full check."""
    local, _, domain = raw.rpartition("@")
    forms = _KNOWN_DOMAINS.get(domain)
    if forms is None or not DOT_ATOM.match(local):
        return ""
    normal, ascii_form = forms
    address = local + "@" + normal
    if max(len(raw.encode()), len(address.encode()), len(local) + 1 + len(ascii_form)) > MAX_ADDRESS_OCTETS:
        return ""  # too long: email-validator words the refusal
    return address.lower()


def clean_name(value: str) -> str:
    """A display name: one line, trimmed, at most MAX_NAME characters."""
    if any(ch in (value or "") for ch in FORBIDDEN_CHARS):
        raise SubscriberError(
            "name contains a line break or NUL character", hint="Give the name on one line."
        )
    name = " ".join((value or "").split())
    if len(name) > MAX_NAME:
        raise SubscriberError(f"name is longer than {MAX_NAME} characters", hint="Shorten the name.")
    return name


def parse_topics(value: str | Sequence[str]) -> tuple[str, ...]:
    """Topics from 'A;B' / 'A,B' text or a sequence; empty means every topic."""
    items = value.replace(",", ";").split(";") if isinstance(value, str) else list(value)
    topics: list[str] = []
    for item in items:
        if any(ch in item for ch in FORBIDDEN_CHARS):
            raise SubscriberError("a topic contains a line break or NUL character")
        topic = " ".join(item.split())
        if len(topic) > MAX_TOPIC:
            raise SubscriberError(f"topic {topic[:20]!r}... is longer than {MAX_TOPIC} characters")
        if topic and topic not in topics:
            topics.append(topic)
    return tuple(topics)


def add_subscriber(
    store: Store,
    email: str,
    *,
    name: str = "",
    topics: str | Sequence[str] = (),
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> tuple[Subscriber, bool]:
    """Validate and add one subscriber; returns (subscriber, created)."""
    return store.subscribers.add_subscriber(
        email=normalise_email(email), name=clean_name(name), topics=parse_topics(topics), status=status
    )


def unknown_topics(store: Store, topics: Iterable[str]) -> list[str]:
    """The topics no stored report carries (a reader limited to them would get nothing).

    Empty when no report is stored yet: there is nothing to compare with.
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    known = store.reports.all_topics()
    if not known:
        return []
    lowered = {t.casefold() for t in known}
    return [t for t in wanted if t.casefold() not in lowered]


def choice(kind: Any, value: str | None, default: Any, column: str) -> Any:
    """``kind(value)`` for an enum column, ``default`` when empty, SubscriberError naming the
    allowed values."""
    text = (value or "").strip().lower()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise SubscriberError(f"{column} {text!r} is not one of {allowed}") from None
