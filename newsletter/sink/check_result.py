"""The outcome of one deliverability check, and the view of a message the checks read.

Shared by every check module of the sink. The checks depend on `Checkable`, not on
`StoredMessage`, so that `message` (which runs the checks) imports them and nothing imports
back: the arrows run message -> checks -> check_result.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Literal, Protocol

Status = Literal["pass", "warn", "fail"]


class Checkable(Protocol):
    """What a check reads of a message (`StoredMessage` is one)."""

    @property
    def raw(self) -> bytes:
        """The bytes as received, CRLF kept."""

    @property
    def headers(self) -> Message:
        """The parsed header block."""

    @property
    def from_(self) -> str:
        """The From header as text ("" if missing)."""

    @property
    def text(self) -> str | None:
        """The decoded text/plain body, or None."""

    @property
    def html(self) -> str | None:
        """The decoded text/html body, or None."""


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: Status
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "reason": self.reason}


def passed(name: str, reason: str) -> Check:
    return Check(name, "pass", reason)


def warned(name: str, reason: str) -> Check:
    return Check(name, "warn", reason)


def failed(name: str, reason: str) -> Check:
    return Check(name, "fail", reason)
