"""Other tools' subscriber exports: which column is which, and what their statuses mean.

A header line is matched (case and surrounding spaces ignored) against the presets
below, or the operator names one (`--format`) and may point any of our fields at a
column (`--map email="E-Mail"`). Every preset turns the tool's own status words into
ours; a word we do not know makes the row invalid, never active, so an unsubscribed,
cleaned, blocklisted or disabled reader can never come in as someone to mail.

Columns the file has and nothing reads are listed (``ColumnPlan.unknown``) so the
operator sees what was left behind; columns a preset knows to be the tool's own
metadata (opt-in times, ids, ratings) are counted separately (``ColumnPlan.ignored``).

The presets follow each tool's documented export:

- Mailchimp audience export: ``Email Address, First Name, Last Name, ...`` in one file
  per status (the unsubscribed file adds ``UNSUB_TIME``, the cleaned one ``CLEAN_TIME``);
- listmonk subscribers export: ``uuid, email, name, attributes, status, created_at,
  updated_at`` with status enabled, disabled or blocklisted;
- Substack subscribers export: ``email, active_subscription, expiry, plan,
  email_disabled, created_at, first_payment_at``;
- Ghost members export: ``id, email, name, note, subscribed_to_emails,
  complimentary_plan, stripe_customer_id, created_at, deleted_at, labels, tiers``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from newsletter.errors import SubscriberError
from newsletter.models import Cadence, SubscriberStatus

FIELDS = ("email", "name", "topics", "status", "cadence")
DELIMITERS = (",", ";", "\t", "|")

# Every status word of the tools we read, as ours. Anything else is refused per row.
STATUS_WORDS: dict[str, SubscriberStatus] = {
    **dict.fromkeys(
        ("active", "subscribed", "enabled", "confirmed", "free", "paid", "comped"), SubscriberStatus.ACTIVE
    ),
    **dict.fromkeys(("pending", "unconfirmed"), SubscriberStatus.PENDING),
    **dict.fromkeys(
        (
            "unsubscribed",
            "disabled",
            "blocklisted",
            "blacklisted",
            "blocked",
            "archived",
            "nonsubscribed",
            "transactional",
            "deleted",
            "inactive",
            "complained",
        ),
        SubscriberStatus.UNSUBSCRIBED,
    ),
    **dict.fromkeys(("bounced", "cleaned", "hard_bounce", "hardbounce"), SubscriberStatus.BOUNCED),
}
TRUE_WORDS = ("true", "yes", "1", "y", "t")
FALSE_WORDS = ("false", "no", "0", "n", "f", "")


@dataclass(frozen=True)
class Preset:
    """How one tool's export maps onto our fields."""

    name: str
    email: tuple[str, ...]  # candidate headers of the address column, first match wins
    name_parts: tuple[tuple[str, ...], ...] = (
        ("name",),
    )  # each part's candidates; parts are joined by a space
    topics: tuple[str, ...] = ()
    cadence: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    signature: frozenset[str] = frozenset()  # header columns that identify the tool (all must be present)
    metadata: frozenset[str] = frozenset()  # the tool's own columns we knowingly leave
    # Boolean columns that, when true (or false for the second set), mean "do not mail".
    gone_if_true: tuple[str, ...] = ()
    gone_if_false: tuple[str, ...] = ()
    gone_if_set: tuple[str, ...] = ()  # a non-empty value (a deletion time) means "do not mail"
    # Header columns that say the whole file holds one status (Mailchimp's per-status files).
    file_status: tuple[tuple[str, SubscriberStatus], ...] = ()


PRESETS: dict[str, Preset] = {
    "newsletter": Preset(
        "newsletter",
        email=("email",),
        topics=("topics",),
        cadence=("cadence",),
        status=("status",),
        metadata=frozenset({"created_at", "confirmed_at"}),
    ),
    "mailchimp": Preset(
        "mailchimp",
        email=("email address",),
        name_parts=(("first name", "fname"), ("last name", "lname")),
        status=("status", "member_status"),
        signature=frozenset({"email address"}),
        metadata=frozenset(
            {
                "address",
                "phone number",
                "birthday",
                "member_rating",
                "optin_time",
                "optin_ip",
                "confirm_time",
                "confirm_ip",
                "latitude",
                "longitude",
                "gmtoff",
                "dstoff",
                "timezone",
                "cc",
                "region",
                "last_changed",
                "leid",
                "euid",
                "notes",
                "unsub_time",
                "unsub_campaign_title",
                "unsub_campaign_id",
                "unsub_reason",
                "unsub_reason_other",
                "clean_time",
                "clean_campaign_title",
                "clean_campaign_id",
            }
        ),
        file_status=(("unsub_time", SubscriberStatus.UNSUBSCRIBED), ("clean_time", SubscriberStatus.BOUNCED)),
    ),
    "listmonk": Preset(
        "listmonk",
        email=("email",),
        status=("status",),
        signature=frozenset({"uuid", "email", "attributes", "status"}),
        metadata=frozenset({"uuid", "attributes", "created_at", "updated_at"}),
    ),
    "substack": Preset(
        "substack",
        email=("email",),
        signature=frozenset({"email", "email_disabled"}),
        metadata=frozenset(
            {"active_subscription", "expiry", "plan", "created_at", "first_payment_at", "subscription_source"}
        ),
        gone_if_true=("email_disabled",),
    ),
    "ghost": Preset(
        "ghost",
        email=("email",),
        signature=frozenset({"email", "subscribed_to_emails"}),
        metadata=frozenset(
            {
                "id",
                "note",
                "complimentary_plan",
                "stripe_customer_id",
                "created_at",
                "tiers",
                "products",
                "labels",
            }
        ),
        gone_if_false=("subscribed_to_emails",),
        gone_if_set=("deleted_at",),
    ),
}
# A file of our own (or a hand-made list) may call the address column any of these.
GENERIC_EMAIL = (
    "email",
    "e-mail",
    "email address",
    "e-mail address",
    "mail",
    "emailaddress",
    "email_address",
)


@dataclass(frozen=True)
class ColumnPlan:
    """Where each of our fields comes from in one file, and what is left unread."""

    preset: Preset
    columns: Mapping[str, int]  # our field -> column index ("name" may be absent: see name_columns)
    name_columns: tuple[int, ...]
    status_checks: tuple[tuple[str, int], ...]  # ("true"/"false"/"set", column index) per do-not-mail column
    file_status: SubscriberStatus | None
    unknown: tuple[str, ...]
    ignored: tuple[str, ...]
    header: tuple[str, ...] = field(default=())

    def given(self) -> frozenset[str]:
        """Our fields this file supplies (an update changes only these)."""
        fields = set(self.columns)
        if self.name_columns:
            fields.add("name")
        return frozenset(fields)


def sniff_delimiter(header_line: str) -> str:
    """The delimiter that splits the header line into the most columns (a comma on a tie)."""
    best, most = ",", 0
    for delimiter in DELIMITERS:
        count = len(next(csv.reader([header_line], delimiter=delimiter), []))
        if count > most:
            best, most = delimiter, count
    return best


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """``--map field=Column`` options as {field: column header}; SubscriberError on a bad one."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, column = item.partition("=")
        key = key.strip().lower()
        column = column.strip().strip('"').strip("'")
        if not sep or key not in FIELDS or not column:
            raise SubscriberError(
                f"--map {item!r} is not FIELD=COLUMN",
                hint=f'FIELD is one of {", ".join(FIELDS)}, e.g. --map email="Email Address".',
            )
        mapping[key] = column
    return mapping


def detect_preset(header: Sequence[str]) -> Preset:
    """The preset whose signature the header carries; ours (or a generic list) otherwise."""
    names = {_key(h) for h in header}
    for preset in PRESETS.values():
        if preset.signature and preset.signature <= names:
            return preset
    return PRESETS["newsletter"]


def plan_columns(
    header: Sequence[str],
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    source: str = "CSV",
) -> ColumnPlan:
    """Resolve the header against a preset (``fmt`` or detected) and ``--map``;
    SubscriberError if no address column."""
    if fmt is not None and fmt not in PRESETS:
        raise SubscriberError(f"unknown format {fmt!r}", hint=f"Formats: {', '.join(PRESETS)}.")
    preset = PRESETS[fmt] if fmt else detect_preset(header)
    index = {
        _key(h): i for i, h in reversed(list(enumerate(header)))
    }  # the first of two same-named columns wins
    columns = _mapped_columns(header, index, mapping or {}, source)
    if "email" not in columns:
        columns["email"] = _email_column(header, index, preset, source)
    for name, candidates in (
        ("topics", preset.topics),
        ("cadence", preset.cadence),
        ("status", preset.status),
    ):
        hit = None if name in columns else _first(index, candidates)
        if hit is not None:
            columns[name] = hit
    name_columns: tuple[int, ...] = ()
    if "name" not in columns:
        parts = [_first(index, part) for part in preset.name_parts]
        name_columns = tuple(p for p in parts if p is not None)
    checks = _status_checks(index, preset)
    file_status = next((status for column, status in preset.file_status if column in index), None)
    used = set(columns.values()) | set(name_columns) | {i for _, i in checks}
    unknown, ignored = _unread_columns(header, used, preset)
    return ColumnPlan(preset, columns, name_columns, checks, file_status, unknown, ignored, tuple(header))


def _first(index: Mapping[str, int], candidates: Sequence[str]) -> int | None:
    """The column of the first candidate header the file has."""
    return next((index[c] for c in candidates if c in index), None)


def _mapped_columns(
    header: Sequence[str], index: Mapping[str, int], mapping: Mapping[str, str], source: str
) -> dict[str, int]:
    """The ``--map`` fields' columns; SubscriberError naming a column the file lacks."""
    columns: dict[str, int] = {}
    for name, column in mapping.items():
        if _key(column) not in index:
            raise SubscriberError(
                f"{source} has no column {column!r} (from --map {name}=...)",
                hint=f"Its columns are: {_listing(header)}.",
            )
        columns[name] = index[_key(column)]
    return columns


def _email_column(header: Sequence[str], index: Mapping[str, int], preset: Preset, source: str) -> int:
    """The preset's address column (any usual name for our own format); SubscriberError if none."""
    found = _first(index, preset.email + (GENERIC_EMAIL if preset.name == "newsletter" else ()))
    if found is None:
        raise SubscriberError(
            f"{source} has no email column (its columns: {_listing(header)})",
            hint='Name the address column with --map email="COLUMN",'
            " or choose the tool that made the file with --format (" + ", ".join(PRESETS) + ").",
        )
    return found


def _status_checks(index: Mapping[str, int], preset: Preset) -> tuple[tuple[str, int], ...]:
    """The preset's do-not-mail columns the file has, as ColumnPlan.status_checks."""
    return tuple(
        [("true", index[c]) for c in preset.gone_if_true if c in index]
        + [("false", index[c]) for c in preset.gone_if_false if c in index]
        + [("set", index[c]) for c in preset.gone_if_set if c in index]
    )


def _unread_columns(
    header: Sequence[str], used: set[int], preset: Preset
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The named columns nothing reads: (unknown to the preset, the tool's own metadata)."""
    unknown: list[str] = []
    ignored: list[str] = []
    for i, h in enumerate(header):
        if i in used or not h.strip():
            continue
        (ignored if _key(h) in preset.metadata else unknown).append(h.strip())
    return tuple(unknown), tuple(ignored)


@dataclass(frozen=True)
class RawRow:
    """Our fields of one row as text, before validation."""

    email: str
    name: str
    topics: str
    status: SubscriberStatus
    cadence: Cadence


def read_row(plan: ColumnPlan, fields: Sequence[str]) -> RawRow:
    """Our fields from one row's values; SubscriberError for a status or cadence we do not know."""
    columns = plan.columns
    size = len(fields)
    email_at, name_at, topics_at, status_at, cadence_at = (columns.get(f, size) for f in FIELDS)
    # A missing column (or a short row) reads as empty.
    email = fields[email_at] if email_at < size else ""
    if "name" in columns:
        name = fields[name_at] if name_at < size else ""
    else:
        name = " ".join(fields[i].strip() for i in plan.name_columns if i < size and fields[i].strip())
    topics = fields[topics_at] if topics_at < size else ""
    status_text = fields[status_at] if status_at < size else ""
    if not status_text and not plan.status_checks:
        status = plan.file_status or SubscriberStatus.ACTIVE
    else:
        status = row_status(plan, fields, status_text)
    cadence = _cadence(fields[cadence_at]) if cadence_at < size else Cadence.DAILY
    return RawRow(email, name, topics, status, cadence)


def row_status(plan: ColumnPlan, fields: Sequence[str], text: str) -> SubscriberStatus:
    """Ours for the row: the file's status word, overruled by any do-not-mail column;
    never active by default for a left reader."""
    word = text.strip().lower()
    if word:
        if word not in STATUS_WORDS:
            allowed = ", ".join(sorted(STATUS_WORDS))
            raise SubscriberError(f"status {word!r} is not one this import knows ({allowed})")
        status = STATUS_WORDS[word]
    else:
        status = plan.file_status or SubscriberStatus.ACTIVE
    for kind, i in plan.status_checks:
        flag = fields[i].strip().lower() if i < len(fields) else ""
        if kind == "set":
            gone = bool(flag)
        elif flag in TRUE_WORDS or flag in FALSE_WORDS:
            # An empty flag says nothing either way: the row keeps the status it has.
            gone = flag != "" and (flag in TRUE_WORDS) == (kind == "true")
        else:
            raise SubscriberError(f"{plan.header[i].strip()} {flag!r} is neither true nor false")
        if gone and status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            status = SubscriberStatus.UNSUBSCRIBED
    return status


def _cadence(text: str) -> Cadence:
    word = text.strip().lower()
    if not word:
        return Cadence.DAILY
    try:
        return Cadence(word)
    except ValueError:
        raise SubscriberError(
            f"cadence {word!r} is not one of {', '.join(c.value for c in Cadence)}"
        ) from None


def _key(header: str) -> str:
    return " ".join(header.strip().lower().split())


def _listing(header: Sequence[str], limit: int = 8) -> str:
    names = [h.strip() for h in header if h.strip()]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"
