"""Bulk import of subscriber lists: ours and other tools' exports, in batches.

Rows are read, validated (email-validator on every address) and written in batches
of ``BATCH_SIZE`` rows, one transaction and one ``executemany`` each
(``SubscriberStore.import_batch``, which keeps the suppression rules). A bad row is
kept with its line number and reason, and skipped; the good rows are kept. Importing
a file twice changes nothing; with ``update`` the names, topics and cadences the file
gives replace the stored ones.
"""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from newsletter.errors import ImportRowError, SubscriberError
from newsletter.storage.store import Store
from newsletter.storage.subscribers import ImportCounts, ImportRow
from newsletter.subscriptions.addresses import clean_name, normalise_email, parse_topics, unknown_topics
from newsletter.subscriptions.formats import ColumnPlan, plan_columns, read_row, sniff_delimiter

BATCH_SIZE = 2000
Progress = Callable[[int], None]  # called after each batch with the number of lines read so far


@dataclass(frozen=True)
class BadRow:
    """One row that was not imported: where it starts, why, and its values as read."""

    line: int
    reason: str
    fields: tuple[str, ...]


@dataclass
class ImportResult:
    """What an import did; ``errors`` are one-line messages naming the file and line."""

    source: str = "CSV"
    format: str = "newsletter"
    delimiter: str = ","
    counts: ImportCounts = field(default_factory=ImportCounts)
    bad_rows: list[BadRow] = field(default_factory=list)
    header: tuple[str, ...] = ()
    unknown_columns: tuple[str, ...] = ()
    ignored_columns: tuple[str, ...] = ()
    unknown_topics: dict[str, int] = field(default_factory=dict)  # topic no report has -> rows naming it

    @property
    def added(self) -> int:
        return self.counts.added

    @property
    def updated(self) -> int:
        return self.counts.updated

    @property
    def unchanged(self) -> int:
        return self.counts.unchanged

    @property
    def suppressed(self) -> int:
        return self.counts.suppressed

    @property
    def invalid(self) -> int:
        return len(self.bad_rows)

    @property
    def errors(self) -> list[ImportRowError]:
        return [ImportRowError(f"{self.source} line {bad.line}: {bad.reason}") for bad in self.bad_rows]

    def summary(self) -> str:
        return (
            f"{self.added:,} added, {self.updated:,} updated, {self.unchanged:,} unchanged,"
            f" {self.invalid:,} invalid, {self.suppressed:,} suppressed"
        )


def import_csv(
    store: Store,
    stream: TextIO,
    *,
    source: str = "CSV",
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    update: bool = False,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportResult:
    """Import every good row of ``stream`` (a header line, then one subscriber a row).

    The delimiter is taken from the header line (comma, semicolon, tab or bar); the
    columns from ``fmt`` or the preset the header matches, and ``mapping`` (our field
    -> column). SubscriberError when there is no header or no address column.
    """
    header_line = stream.readline()
    if not header_line.strip():
        raise SubscriberError(
            f"{source} is empty: no header line",
            hint="The first line must name the columns, e.g. email,name,topics.",
        )
    delimiter = sniff_delimiter(header_line.rstrip("\r\n"))
    header = tuple(next(csv.reader([header_line], delimiter=delimiter)))
    plan = plan_columns(header, fmt=fmt, mapping=mapping, source=source)
    result = ImportResult(
        source,
        plan.preset.name,
        delimiter,
        header=header,
        unknown_columns=plan.unknown,
        ignored_columns=plan.ignored,
    )
    given = plan.given()
    topics_seen: Counter[str] = Counter()
    batch: dict[str, ImportRow] = {}
    reader = csv.reader(stream, delimiter=delimiter)

    def flush() -> None:
        if batch:
            result.counts += store.subscribers.import_batch(list(batch.values()), given=given, update=update)
            batch.clear()
        if progress is not None:
            progress(reader.line_num + 1)

    while True:
        line = (
            reader.line_num + 2
        )  # the header was line 1; a quoted field may span lines: report where the record starts
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.bad_rows.append(BadRow(line, f"not valid CSV ({exc})", ()))
            break
        if not fields or not any(f.strip() for f in fields):
            continue
        try:
            row = _validated(plan, fields)
        except SubscriberError as exc:
            result.bad_rows.append(BadRow(line, exc.message, tuple(fields)))
            continue
        topics_seen.update(row.topics)
        if row.email in batch:
            result.counts.unchanged += 1  # the same address twice in a file: the first row counts...
            if not update:
                continue
        batch[row.email] = row  # ...unless updating, where the last one wins
        if len(batch) >= batch_size:
            flush()
    flush()
    result.unknown_topics = {t: topics_seen[t] for t in unknown_topics(store, topics_seen)}
    return result


def _validated(plan: ColumnPlan, fields: list[str]) -> ImportRow:
    if len(fields) > len(plan.header) and any(f.strip() for f in fields[len(plan.header) :]):
        raise SubscriberError("has more fields than the header")
    raw = read_row(plan, fields)
    return ImportRow(
        normalise_email(raw.email), clean_name(raw.name), parse_topics(raw.topics), raw.status, raw.cadence
    )


def import_file(
    store: Store, path: Path, *, encoding: str = "utf-8", source: str | None = None, **options: object
) -> ImportResult:
    """``import_csv`` on a file, after checking the whole file decodes (nothing is written if it does not).

    ``source`` names the file in results and errors (default: its path; an upload gives the
    name it was uploaded under). The CLI, the console and the API all import through here.
    """
    try:
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    except LookupError as exc:
        raise SubscriberError(f"unknown encoding {encoding!r}", hint="Use utf-8, cp1252 or latin-1.") from exc
    name = source or str(path)
    try:
        _check_encoding(path, codec)
        with path.open(newline="", encoding=codec) as stream:
            return import_csv(store, stream, source=name, **options)  # type: ignore[arg-type]
    except OSError as exc:
        raise SubscriberError(f"cannot read {name}: {exc.strerror}", hint="Check the path.") from exc
    except UnicodeDecodeError as exc:
        raise SubscriberError(
            f"{name} is not {'UTF-8' if codec == 'utf-8-sig' else encoding} text"
            f" (byte {exc.start} of a block cannot be read)",
            hint="Save the file as 'CSV UTF-8', or name its encoding:"
            " --encoding cp1252 (Excel on Windows) or latin-1.",
        ) from exc


def _check_encoding(path: Path, codec: str) -> None:
    decoder = codecs.getincrementaldecoder(codec)()
    with path.open("rb") as raw:
        while chunk := raw.read(1 << 20):
            decoder.decode(chunk)
    decoder.decode(b"", final=True)


def count_lines(path: Path) -> int:
    """Physical lines in a file (the progress bar's total; a quoted line break counts twice)."""
    lines = 0
    with path.open("rb") as raw:
        while chunk := raw.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def write_bad_rows(result: ImportResult, stream: TextIO) -> int:
    """The bad rows as CSV: their line, the reason, then the values as read (under the file's header)."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(("line", "error", *result.header))
    for bad in result.bad_rows:
        writer.writerow((bad.line, bad.reason, *bad.fields))
    return len(result.bad_rows)
