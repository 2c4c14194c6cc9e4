"""Value objects shared by the core: frozen dataclasses, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class SubscriberStatus(str, enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class Cadence(str, enum.Enum):
    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryState(str, enum.Enum):
    """Where one (edition, subscriber) row stands.

    pending: not tried yet; sending: handed to a connection, outcome not recorded;
    sent: the server accepted the DATA; deferred: a transient failure, retried later;
    failed: a permanent failure; unknown: the connection was lost after the data
    was sent, so the server may have it; suppressed: the subscriber left or bounced
    before the row was sent, so it was not sent.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"


class EditionStatus(str, enum.Enum):
    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    PAUSED = "paused"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Report:
    """One report from the feed. ``id`` is the feed guid, else its link."""

    id: str
    title: str
    url: str
    published: datetime
    teaser: str
    topics: tuple[str, ...] = ()
    members_only: bool = False
    # Its place in the ledger (the order the service first stored reports; 0 = not stored yet).
    # Not part of equality: a report read from the feed equals its stored copy.
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: SubscriberStatus
    topics: tuple[str, ...] = ()  # empty = every topic
    cadence: Cadence = Cadence.DAILY
    paused: bool = False
    created_at: datetime | None = None
    confirmed_at: datetime | None = None
    last_digest_at: datetime | None = None
    updated_at: datetime | None = None  # last change of status or preferences
    ledger_seq: int | None = None  # the ledger mark: reports up to this seq are done for this reader


@dataclass(frozen=True)
class Edition:
    id: int
    key: str
    schedule: str
    status: EditionStatus
    as_of: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One distinct report set in an edition, rendered once."""

    id: int
    edition_id: int
    report_ids: tuple[str, ...]
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class Delivery:
    """One outbox row: what is (to be) sent to one subscriber in one edition."""

    id: int
    edition_id: int
    subscriber_id: int
    variant_id: int
    email: str
    name: str
    message_id: str
    state: DeliveryState
    attempts: int = 0


@dataclass(frozen=True)
class DeliveryOutcome:
    delivery_id: int
    subscriber_id: int
    state: DeliveryState
    code: int | None = None
    reply: str = ""
    next_attempt_at: datetime | None = None
    expired: bool = False  # failed because it stayed deferred past delivery.max_age (a soft bounce)


@dataclass(frozen=True)
class FeedValidators:
    """HTTP cache validators from the previous fetch of a feed, for a conditional GET."""

    etag: str | None = None
    modified: str | None = None
