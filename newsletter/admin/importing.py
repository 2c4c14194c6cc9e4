"""Import by upload: the file is held (in memory, for its uploader's session only) between the
column-mapping preview and the import, which then runs the CLI's own importer and presets.

The preview reads the header exactly as ``newsletter subscribers import`` does
(delimiter sniffing, the preset the header matches or the one chosen, the operator's
column choices) and shows the first rows as they would come in, with their status.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from dataclasses import dataclass
from threading import Lock

from newsletter.errors import SubscriberError
from newsletter.storage.store import Store
from newsletter.subscriptions.formats import (
    FIELDS,
    PRESETS,
    ColumnPlan,
    plan_columns,
    read_row,
    sniff_delimiter,
)
from newsletter.subscriptions.importer import ImportResult, import_csv

HOLD_FOR = 1800.0  # seconds an upload waits for its import
SAMPLE_ROWS = 5
FORMATS = tuple(PRESETS)


@dataclass(frozen=True)
class Upload:
    owner: str  # the session's id hash
    filename: str
    text: str
    at: float


@dataclass(frozen=True)
class SampleRow:
    line: int
    email: str
    name: str
    status: str
    problem: str


@dataclass(frozen=True)
class MappingPreview:
    upload_id: str
    filename: str
    header: tuple[str, ...]
    plan: ColumnPlan
    chosen: dict[str, str]  # our field -> the column it comes from ("" = none, or the preset's name parts)
    rows: list[SampleRow]
    lines: int


class Uploads:
    """Uploads waiting between preview and import, per process."""

    def __init__(self) -> None:
        self._held: dict[str, Upload] = {}
        self._lock = Lock()

    def hold(self, owner: str, filename: str, data: bytes) -> str:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SubscriberError(
                f"{filename} is not UTF-8 text", hint="Save it as 'CSV UTF-8' and upload it again."
            ) from exc
        upload_id = secrets.token_urlsafe(16)
        now = time.monotonic()
        with self._lock:
            self._held = {k: u for k, u in self._held.items() if now - u.at < HOLD_FOR}
            self._held[upload_id] = Upload(owner, filename, text, now)
        return upload_id

    def get(self, upload_id: str, owner: str) -> Upload:
        with self._lock:
            upload = self._held.get(upload_id)
        if upload is None or upload.owner != owner or time.monotonic() - upload.at > HOLD_FOR:
            raise SubscriberError(
                "that upload is gone (uploads wait 30 minutes, for the one who made them)",
                hint="Upload the file again.",
            )
        return upload

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._held.pop(upload_id, None)


def preview(upload_id: str, upload: Upload, *, fmt: str | None, mapping: dict[str, str]) -> MappingPreview:
    """What the import would read: the columns per field and the first rows."""
    stream = io.StringIO(upload.text, newline="")
    header_line = stream.readline()
    if not header_line.strip():
        raise SubscriberError(
            f"{upload.filename} is empty: no header line", hint="The first line must name the columns."
        )
    delimiter = sniff_delimiter(header_line.rstrip("\r\n"))
    header = tuple(next(csv.reader([header_line], delimiter=delimiter)))
    plan = plan_columns(header, fmt=fmt, mapping=mapping, source=upload.filename)
    chosen = {name: header[i] for name, i in plan.columns.items()}
    if "name" not in chosen and plan.name_columns:
        chosen["name"] = ""  # the preset joins several columns
    rows: list[SampleRow] = []
    reader = csv.reader(stream, delimiter=delimiter)
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(rows) < SAMPLE_ROWS:
            try:
                raw = read_row(plan, fields)
                rows.append(SampleRow(reader.line_num + 1, raw.email, raw.name, raw.status.value, ""))
            except SubscriberError as exc:
                rows.append(SampleRow(reader.line_num + 1, "", "", "", exc.message))
    return MappingPreview(upload_id, upload.filename, header, plan, chosen, rows, reader.line_num)


def run_import(
    store: Store, upload: Upload, *, fmt: str | None, mapping: dict[str, str], update: bool
) -> ImportResult:
    return import_csv(
        store,
        io.StringIO(upload.text, newline=""),
        source=upload.filename,
        fmt=fmt,
        mapping=mapping,
        update=update,
    )


def mapping_from(form: dict[str, str]) -> dict[str, str]:
    """The operator's column choices (``map_<field>`` = a column name); empty ones are left to the preset."""
    return {name: form[f"map_{name}"] for name in FIELDS if form.get(f"map_{name}")}
