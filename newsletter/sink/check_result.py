"""The outcome of one deliverability check, shared by every check module of the sink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail"]


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
