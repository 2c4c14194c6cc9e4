"""The one judgement of every delivery failure, whether it came as an SMTP reply or a DSN.

A failure is judged from three things: the reply code (550, 421 ...), the RFC 3463
enhanced status (5.1.1 ...) and the diagnostic text, plus -- for SMTP replies --
the step of the transaction that failed. There are four verdicts:

- ``BAD_ADDRESS``: the address does not exist or is disabled. Suppresses the reader.
- ``SOFT``: a temporary or reader-side trouble (4.x.x, mailbox full, expired in a
  relay). Counts toward ``delivery.soft_bounce_limit``.
- ``BLOCKED``: the receiving side refused *us* or *our message* by policy (spam,
  DMARC, blocklists, content filters: 5.7.x). Never suppresses a reader; counted per
  receiving domain, and a burst pauses sending to that domain.
- ``SENDER``: our own setup is refused (connect, HELO, MAIL FROM, AUTH, TLS, relay
  access, protocol errors). Blames no reader; pauses the edition.

``RULES`` is the table, first match wins; the README's "How failures are judged"
section prints the same table. Everything here is pure: no I/O, no store.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Steps of our SMTP session in which any refusal is about us, never about a reader.
SENDER_STAGES = frozenset({"connect", "helo", "tls", "auth"})


class Verdict(str, enum.Enum):
    BAD_ADDRESS = "bad_address"
    SOFT = "soft"
    BLOCKED = "blocked"
    SENDER = "sender"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    status: str  # the enhanced status found ('5.1.1') or ''
    rule: str  # which row of RULES decided, for the operator and the tests

    @property
    def suppresses(self) -> bool:
        return self.verdict is Verdict.BAD_ADDRESS

    @property
    def blames_reader(self) -> bool:
        return self.verdict in (Verdict.BAD_ADDRESS, Verdict.SOFT)


@dataclass(frozen=True)
class Rule:
    """One row of the table: matches when the status is one of ``statuses`` (an entry
    ending in '.' is a prefix: '5.7.' is every 5.7.x) and the diagnostic matches
    ``text``; an empty field matches anything."""

    verdict: Verdict
    name: str
    statuses: tuple[str, ...] = ()
    text: str = ""

    def matches(self, status: str, diagnostic: str) -> bool:
        if self.statuses and not any(
            status == s or (s.endswith(".") and status.startswith(s)) for s in self.statuses
        ):
            return False
        return not self.text or re.search(self.text, diagnostic, re.I) is not None


_SENDER_TEXT = (
    r"helo command rejected|invalid helo|need fully-qualified hostname|sender address rejected|relay access"
    r" denied"
    r"|relaying denied|not permitted to relay|authentication"
    r" (is )?required|authentication failed|must issue a starttls"
    r"|bare <?(lf|cr)>?|bare newline|improper use of smtp command pipelining"
)
_BLOCKED_TEXT = (
    r"spam|blocklist|blacklist|block list|black"
    r" list|spamhaus|barracuda|spamcop|sorbs|dnsbl|\brbl\b|dmarc|reputation"
    r"|content rejected|message content|policy|client host rejected|blocked|not accepted due to"
)
_BAD_ADDRESS_TEXT = (
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|mailbox unavailable|invalid"
    r" recipient"
    r"|recipient (address )?rejected|address rejected|unrouteable address|mailbox (is )?disabled|account"
    r" (is )?disabled"
    r"|no mailbox here|undeliverable address"
)
_FULL_TEXT = (
    r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage|mailbox size limit"
)

# The table, first match wins. The status is the enhanced status of the reply or DSN;
# a bare SMTP code without one counts as 5.0.0 / 4.0.0.
RULES: tuple[Rule, ...] = (
    Rule(
        Verdict.SENDER,
        "our sender address or domain is refused (5.1.7, 5.1.8, 5.7.27)",
        statuses=("5.1.7", "5.1.8", "5.7.27"),
    ),
    Rule(
        Verdict.SENDER,
        "authentication or encryption required (5.7.8, 5.7.9, 5.7.10, 5.7.11)",
        statuses=("5.7.8", "5.7.9", "5.7.10", "5.7.11"),
    ),
    Rule(
        Verdict.SENDER, "HELO, sender address, relay access or protocol named in the text", text=_SENDER_TEXT
    ),
    Rule(
        Verdict.BAD_ADDRESS,
        "no such address: 5.1.0, 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10",
        statuses=("5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"),
    ),
    Rule(Verdict.BAD_ADDRESS, "mailbox disabled: 5.2.1", statuses=("5.2.1",)),
    Rule(Verdict.SOFT, "mailbox full: 5.2.2, 4.2.2", statuses=("5.2.2", "4.2.2")),
    Rule(Verdict.BLOCKED, "policy, spam, DMARC (5.7.26), blocklists: 5.7.x", statuses=("5.7.",)),
    Rule(Verdict.BLOCKED, "spam, blocklist, DMARC or policy named in the text", text=_BLOCKED_TEXT),
    Rule(
        Verdict.BAD_ADDRESS,
        "unknown user named in the text (bare 5xx)",
        statuses=("5.",),
        text=_BAD_ADDRESS_TEXT,
    ),
    Rule(Verdict.SENDER, "protocol error: 5.5.x", statuses=("5.5.",)),
    Rule(Verdict.SOFT, "mailbox full named in the text", text=_FULL_TEXT),
    Rule(Verdict.SOFT, "anything else: 4.x.x, other 5.x.x (system, network, expired in a relay)"),
)


def enhanced_status(text: str) -> str:
    """The RFC 3463 status in a reply or DSN field ('5.1.1'), or ''."""
    match = ENHANCED_RE.search(text or "")
    return ".".join(match.groups()) if match else ""


def judge(code: int | None, diagnostic: str, *, status: str = "", stage: str = "dsn") -> Judgement:
    """Judge one failure.

    ``code``: the SMTP reply code (None for a DSN without one, or a lost connection);
    ``diagnostic``: the reply text or the DSN's Diagnostic-Code; ``status``: the DSN's
    Status field (else it is read from the diagnostic); ``stage``: where our SMTP
    session failed (connect, helo, tls, auth, mail, rcpt, data, content, reply), or
    'dsn' for a report that came back later.
    """
    status = enhanced_status(status) or enhanced_status(diagnostic)
    if code is None and (leading := re.match(r"\s*(?:smtp;\s*)?([245]\d\d)\b", diagnostic or "")):
        code = int(leading.group(1))  # a DSN's Diagnostic-Code: 'smtp; 550 ...'
    if stage in SENDER_STAGES:
        return Judgement(Verdict.SENDER, status, f"refused at {stage}: our setup, not a reader")
    if stage == "mail" and (code is None or code >= 500):
        return Judgement(Verdict.SENDER, status, "refused at MAIL FROM: our sender, not a reader")
    if stage != "dsn" and (code is None or code in (421, -1)):
        return Judgement(Verdict.SENDER, status, "connection refused, lost or closed (421)")
    effective = status or _status_from_code(code)
    rule = next(r for r in RULES if r.matches(effective, diagnostic or ""))
    return Judgement(rule.verdict, status, rule.name)


def _status_from_code(code: int | None) -> str:
    if code is None:
        return ""
    return "5.0.0" if 500 <= code < 600 else "4.0.0" if 400 <= code < 500 else ""


def sender_hint(stage: str, code: int | None, reply: str) -> str:
    """What an operator should check when our side is refused (for one-line CLI errors)."""
    text = reply.lower()
    if stage == "helo" or "helo" in text:
        return "Set smtp.helo_name (NEWSLETTER_SMTP_HELO_NAME) to this host's public, fully-qualified name."
    if stage == "auth" or "authentication" in text:
        return "Check smtp.username and NEWSLETTER_SMTP_PASSWORD; the server refused the login."
    if stage == "tls" or "ssl" in text or "tls" in text or "certificate" in text:
        return "Check smtp.security: 'starttls' for port 587, 'tls' for port 465, 'none' for a local relay."
    if (
        "name or service not known" in text
        or "nodename nor servname" in text
        or "gaierror" in text
        or "temporary failure in name resolution" in text
    ):
        return "Check smtp.host: the name does not resolve."
    if "connection refused" in text:
        return "Check smtp.host and smtp.port: nothing listens there (is the SMTP server running?)."
    if "relay" in text:
        return (
            "The server does not relay for this host:"
            " allow it in the server's mynetworks or log in (smtp.username)."
        )
    if "sender" in text or stage == "mail":
        return "Check mail.from_address and mail.bounce_domain: the server refuses the sender address."
    if "disconnected" in text or "connection unexpectedly closed" in text or code == -1:
        return "Check smtp.port: the server there does not speak SMTP (an HTTP port?)."
    return (
        "Fix the SMTP settings (smtp.host, smtp.port, smtp.security), then 'newsletter send --resume --now'."
    )
