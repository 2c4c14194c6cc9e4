"""Fault injection: make the sink misbehave the way real mail servers do.

A `FaultRule` is a value: *where* it acts (the SMTP stage), *what* it does (reply with a code,
drop the connection, delay) and *when* (recipient/sender pattern, every Nth, after N, a
seeded probability, at most K times). A `FaultSet` holds the active rules of one sink and the
per-rule counters; the SMTP session asks it for a `Decision` at each stage.

Counting: each rule counts the events it sees at its own stage that pass its address
patterns -- one per transaction at MAIL and DATA, one per recipient at RCPT -- numbered
1, 2, 3, ... from when the rule was added. `after=N` fires from event N+1 on, `every=N` on
events N, 2N, ...; `probability` is drawn from a `random.Random(seed)` owned by the rule, so
a seeded rule fires on the same events in every run.

Compact text form (CLI `--fault`, `parse_fault_spec`)::

    STAGE:ACTION[:KEY=VALUE]...
    STAGE   mail | rcpt | data
    ACTION  CODE[ TEXT]          reply CODE (400-599) with TEXT, e.g. "550 5.1.1 No such user"
            drop                 close the connection without replying (DATA: message not stored)
            drop-after-store     DATA only: store the message, then close without replying
            delay=SECONDS        wait, then carry on normally
    KEY     to=PATTERN  from=PATTERN   fnmatch pattern, or re:REGEX (case-insensitive)
            probability=P  seed=N  after=N  every=N  times=N  delay=SECONDS

The TEXT of a reply and a REGEX cannot contain ':'. A 421 reply always closes the connection after it is
sent, as RFC 5321 requires.
"""

from __future__ import annotations

import fnmatch
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from newsletter.sink.errors import FaultSpecError

Stage = Literal["mail", "rcpt", "data"]
Action = Literal["reply", "drop", "drop_after_store", "delay"]

STAGES: tuple[str, ...] = ("mail", "rcpt", "data")
ACTIONS: tuple[str, ...] = ("reply", "drop", "drop_after_store", "delay")

DEFAULT_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox unavailable, try again later",
    451: "4.3.0 Local error in processing, try again later",
    452: "4.5.3 Insufficient system storage",
    550: "5.1.1 Mailbox unavailable",
    552: "5.3.4 Message size exceeds fixed maximum message size",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}


@dataclass(frozen=True)
class FaultRule:
    """One injected fault. See the module docstring for the counting rules.

    `code`/`text` are used by action "reply" (text defaults to a stock phrase for the code);
    `delay` (seconds) is waited before any action, and is the whole effect of action "delay".
    """

    stage: Stage
    action: Action = "reply"
    code: int | None = None
    text: str = ""
    delay: float = 0.0
    to: str | None = None
    sender: str | None = None
    probability: float | None = None
    seed: int | None = None
    after: int = 0
    every: int | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        """FaultSpecError (saying what to write instead) for a rule the sink cannot act on."""
        self._check_action()
        self._check_counts()
        self._check_patterns()

    def _check_action(self) -> None:
        """A known stage and action; a reply has a code (400-599), a drop none; to= needs recipients."""
        if self.stage not in STAGES:
            raise FaultSpecError(f"unknown stage {self.stage!r}; use one of mail, rcpt, data")
        if self.action not in ACTIONS:
            raise FaultSpecError(
                f"unknown action {self.action!r}; use a reply code, drop, drop-after-store or delay"
            )
        if self.action == "reply":
            if self.code is None or not 400 <= self.code <= 599:
                raise FaultSpecError(f"reply code must be 400-599, got {self.code!r}; e.g. 451 or 550")
        if self.action in ("drop", "drop_after_store") and self.code is not None:
            raise FaultSpecError(f"action {self.action} takes no reply code")
        if self.action == "drop_after_store" and self.stage != "data":
            raise FaultSpecError("drop-after-store only makes sense at the data stage")
        if self.to is not None and self.stage == "mail":
            raise FaultSpecError("to= cannot match at the mail stage (no recipients yet); use rcpt or data")

    def _check_counts(self) -> None:
        """The delay, probability and counters are in range."""
        if self.delay < 0:
            raise FaultSpecError(f"delay must be >= 0 seconds, got {self.delay}")
        if self.action == "delay" and self.delay <= 0:
            raise FaultSpecError("action delay needs delay=SECONDS greater than 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise FaultSpecError(f"probability must be between 0 and 1, got {self.probability}")
        if self.after < 0:
            raise FaultSpecError(f"after must be >= 0, got {self.after}")
        if self.every is not None and self.every < 1:
            raise FaultSpecError(f"every must be >= 1, got {self.every}")
        if self.times is not None and self.times < 1:
            raise FaultSpecError(f"times must be >= 1, got {self.times}")

    def _check_patterns(self) -> None:
        """The address patterns compile and the reply text is one line."""
        for name in ("to", "sender"):
            pattern = getattr(self, name)
            if pattern is not None and pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise FaultSpecError(f"{name}: bad regular expression {pattern[3:]!r}: {exc}") from exc
        if "\r" in self.text or "\n" in self.text:
            raise FaultSpecError("reply text must be a single line")

    @property
    def reply(self) -> str | None:
        """The SMTP reply line this rule sends, or None for drop/delay rules."""
        if self.action != "reply" or self.code is None:
            return None
        return f"{self.code} {self.text or DEFAULT_TEXTS.get(self.code, 'Fault injected by the sink')}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the shape POST /api/faults accepts)."""
        return {
            k: v for k, v in asdict(self).items() if v not in (None, "", 0, 0.0) or k in ("stage", "action")
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from JSON; unknown keys are an error (with the list of known ones)."""
        known = set(cls.__dataclass_fields__)
        data = dict(data)
        if "from" in data and "sender" not in data:
            data["sender"] = data.pop("from")
        if isinstance(data.get("action"), str):
            data["action"] = data["action"].replace("-", "_")
        unknown = set(data) - known
        if unknown:
            raise FaultSpecError(f"unknown fault field(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise FaultSpecError(f"bad fault rule: {exc}") from exc

    def matches_address(self, pattern: str | None, address: str) -> bool:
        if pattern is None:
            return True
        if pattern.startswith("re:"):
            return re.search(pattern[3:], address, re.IGNORECASE) is not None
        return fnmatch.fnmatchcase(address.lower(), pattern.lower())


@dataclass(frozen=True)
class Decision:
    """What the SMTP session must do at one stage. `reply` None means carry on normally."""

    delay: float = 0.0
    reply: str | None = None
    drop: bool = False
    drop_after_store: bool = False

    @property
    def closes(self) -> bool:
        """True if the connection ends after this reply (421, RFC 5321 section 3.8)."""
        return self.reply is not None and self.reply.startswith("421")


PROCEED = Decision()


@dataclass
class _RuleState:
    rule: FaultRule
    rng: random.Random
    seen: int = 0
    fired: int = 0


@dataclass
class FaultSet:
    """The active faults of one sink. Thread-safe: the SMTP thread decides, tests/API edit.

    `close_after` (per connection): after that many messages accepted on one connection,
    the sink closes it right after the 250 reply, as providers that cap messages per
    session do.
    """

    close_after: int | None = None
    _states: list[_RuleState] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: FaultRule) -> FaultRule:
        """Activate `rule` (appended; rules are evaluated in the order added)."""
        with self._lock:
            self._states.append(_RuleState(rule, random.Random(rule.seed)))
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._states = [s for s in self._states if s.rule is not rule]

    def clear(self) -> None:
        """Remove every rule and the per-connection limit."""
        with self._lock:
            self._states.clear()
            self.close_after = None

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [s.rule for s in self._states]

    def fired(self, rule: FaultRule) -> int:
        """How many times `rule` has fired so far."""
        with self._lock:
            return next((s.fired for s in self._states if s.rule is rule), 0)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": [dict(s.rule.to_dict(), fired=s.fired, seen=s.seen) for s in self._states],
                "close_after": self.close_after,
            }

    def decide(self, stage: Stage, *, sender: str, recipients: list[str] | tuple[str, ...]) -> Decision:
        """Count the event for every rule of `stage` that matches, and return the decision.

        Delays of all firing rules add up; the first firing non-delay rule decides the outcome.
        """
        delay = 0.0
        with self._lock:
            for state in self._states:
                rule = state.rule
                if rule.stage != stage:
                    continue
                if not rule.matches_address(rule.sender, sender):
                    continue
                if rule.to is not None and not any(rule.matches_address(rule.to, r) for r in recipients):
                    continue
                state.seen += 1
                if not self._fires(state):
                    continue
                state.fired += 1
                delay += rule.delay
                if rule.action == "delay":
                    continue
                return Decision(
                    delay=delay,
                    reply=rule.reply,
                    drop=rule.action == "drop",
                    drop_after_store=rule.action == "drop_after_store",
                )
        return Decision(delay=delay) if delay else PROCEED

    @staticmethod
    def _fires(state: _RuleState) -> bool:
        rule = state.rule
        if rule.times is not None and state.fired >= rule.times:
            return False
        if state.seen <= rule.after:
            return False
        if rule.every is not None and state.seen % rule.every:
            return False
        if rule.probability is not None and state.rng.random() >= rule.probability:
            return False
        return True


_OPTION_KEYS = {"to", "from", "probability", "seed", "after", "every", "times", "delay"}


def parse_fault_spec(spec: str) -> FaultRule:
    """Parse the compact text form (see module docstring) into a `FaultRule`.

    Raises `FaultSpecError` with a one-line message and an example on any mistake.
    """
    example = "e.g. 'rcpt:550 5.1.1 No such user:to=*@bad.example' or 'data:451:probability=0.1:seed=7'"
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1].strip():
        raise FaultSpecError(f"fault {spec!r} needs STAGE:ACTION; {example}")
    stage = parts[0].strip().lower()
    if stage not in STAGES:
        raise FaultSpecError(f"fault {spec!r}: unknown stage {stage!r}, use mail, rcpt or data; {example}")
    action_text = parts[1].strip()
    fields: dict[str, Any] = {"stage": stage}
    options = parts[2:]
    lowered = action_text.lower()
    if lowered == "drop":
        fields["action"] = "drop"
    elif lowered in ("drop-after-store", "drop_after_store"):
        fields["action"] = "drop_after_store"
    elif lowered.startswith("delay"):
        fields["action"] = "delay"
        options = [action_text] + options
    else:
        code_text, _, text = action_text.partition(" ")
        if not code_text.isdigit():
            raise FaultSpecError(
                f"fault {spec!r}: action must be a reply code, drop, drop-after-store or delay=SECONDS;"
                f" {example}"
            )
        fields.update(action="reply", code=int(code_text), text=text.strip())
    # "to=re:REGEX" contains the separator; glue the regex back on (so it cannot hold ':').
    merged: list[str] = []
    for option in options:
        if merged and re.fullmatch(r"\s*(to|from)\s*=\s*re\s*", merged[-1], re.IGNORECASE):
            merged[-1] += ":" + option
        else:
            merged.append(option)
    for option in merged:
        key, sep, value = option.partition("=")
        key = key.strip().lower()
        if not sep or key not in _OPTION_KEYS:
            raise FaultSpecError(
                f"fault {spec!r}: bad option {option!r}, use KEY=VALUE with KEY one of "
                f"{', '.join(sorted(_OPTION_KEYS))} (reply text cannot contain ':')"
            )
        value = value.strip()
        try:
            if key in ("to", "from"):
                fields["sender" if key == "from" else "to"] = value
            elif key in ("probability", "delay"):
                fields[key] = float(value)
            else:
                fields[key] = int(value)
        except ValueError as exc:
            raise FaultSpecError(f"fault {spec!r}: {key}= needs a number, got {value!r}") from exc
    return FaultRule(**fields)
