"""Subscriber operations for operators: validate, add, remove, import and export.

Addresses are normalised with email-validator (no DNS lookups unless asked).
Names and topics are single-line plain text: a CR, LF or NUL is refused, so a
value can never start a mail header.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import ImportRowError, InvalidAddress, SubscriberError
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.storage.store import Store

MAX_NAME = 200
MAX_TOPIC = 60
FORBIDDEN_CHARS = ("\r", "\n", "\x00")
CSV_FIELDS = ("email", "name", "topics", "status", "cadence", "created_at", "confirmed_at")


def normalise_email(value: str, *, check_deliverability: bool = False) -> str:
    """The canonical (lower-case, IDNA-normalised) form of an address; InvalidAddress with the reason when it is not one."""
    raw = (value or "").strip()
    if any(ch in raw for ch in FORBIDDEN_CHARS):
        raise InvalidAddress("email address contains a line break or NUL character")
    if not raw:
        raise InvalidAddress("email address is empty")
    try:
        result = validate_email(raw, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{raw!r} is not a valid email address: {exc}") from exc
    # Stored lower-case: mailbox providers ignore case in the local part, and two
    # spellings of one address must not become two subscribers.
    return result.normalized.lower()


def clean_name(value: str) -> str:
    """A display name: one line, trimmed, at most MAX_NAME characters."""
    if any(ch in (value or "") for ch in FORBIDDEN_CHARS):
        raise SubscriberError("name contains a line break or NUL character", hint="Give the name on one line.")
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


def add_subscriber(store: Store, email: str, *, name: str = "", topics: str | Sequence[str] = (), status: SubscriberStatus = SubscriberStatus.ACTIVE) -> tuple[Subscriber, bool]:
    """Validate and add one subscriber; returns (subscriber, created)."""
    return store.subscribers.add_subscriber(email=normalise_email(email), name=clean_name(name), topics=parse_topics(topics), status=status)


@dataclass
class ImportResult:
    added: int = 0
    unchanged: int = 0
    errors: list[ImportRowError] = field(default_factory=list)


def import_csv(store: Store, stream: TextIO, *, source: str = "CSV") -> ImportResult:
    """Add every good row of a CSV (header: email[,name][,topics][,status][,cadence]).

    Rows are active unless a status column says otherwise (an export re-imported
    keeps its unsubscribed and bounced people suppressed). A bad row is reported
    with the line it starts on and the reason, and skipped; the good rows are
    kept. Rows whose address already exists change nothing, so importing the same
    file twice is a no-op.
    """
    result = ImportResult()
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        raise SubscriberError(f"{source} has no 'email' column in its header line", hint="The first line must name the columns, e.g. email,name,topics.")
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    while True:
        line = reader.line_num + 1  # a quoted field may span lines: report where the record starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(ImportRowError(f"{source} line {line}: not valid CSV ({exc})"))
            break
        try:
            if None in row:
                raise SubscriberError("has more fields than the header")
            email = normalise_email(row.get("email") or "")
            _, created = store.subscribers.add_subscriber(
                email=email,
                name=clean_name(row.get("name") or ""),
                topics=parse_topics(row.get("topics") or ""),
                status=_choice(SubscriberStatus, row.get("status"), SubscriberStatus.ACTIVE, "status"),
                cadence=_choice(Cadence, row.get("cadence"), Cadence.DAILY, "cadence"),
            )
        except SubscriberError as exc:
            result.errors.append(ImportRowError(f"{source} line {line}: {exc.message}", hint=exc.hint))
            continue
        if created:
            result.added += 1
        else:
            result.unchanged += 1
    return result


def _choice(kind: Any, value: str | None, default: Any, column: str) -> Any:
    text = (value or "").strip().lower()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise SubscriberError(f"{column} {text!r} is not one of {allowed}") from None


def import_file(store: Store, path: Path) -> ImportResult:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            return import_csv(store, stream, source=str(path))
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror}", hint="Check the path.") from exc
    except UnicodeDecodeError as exc:
        raise SubscriberError(f"{path} is not UTF-8 text", hint="Save the CSV as UTF-8.") from exc


def export_csv(subscribers: Iterable[Subscriber], stream: TextIO) -> int:
    """Write subscribers as CSV (re-importable); returns how many rows were written."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    count = 0
    for s in subscribers:
        writer.writerow(
            [
                s.email,
                _csv_safe(s.name),
                ";".join(_csv_safe(t) for t in s.topics),
                s.status.value,
                s.cadence.value,
                s.created_at.isoformat() if s.created_at else "",
                s.confirmed_at.isoformat() if s.confirmed_at else "",
            ]
        )
        count += 1
    return count


def _csv_safe(value: str) -> str:
    # A leading =, +, - or @ is run as a formula by spreadsheet programs.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def export_text(subscribers: Iterable[Subscriber]) -> str:
    buffer = io.StringIO()
    export_csv(subscribers, buffer)
    return buffer.getvalue()
