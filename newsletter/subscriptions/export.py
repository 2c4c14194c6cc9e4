"""Subscribers written as CSV in our own columns (the file `subscribers import` reads back)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import TextIO

from newsletter.models import Subscriber

CSV_FIELDS = ("email", "name", "topics", "status", "cadence", "created_at", "confirmed_at")


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
