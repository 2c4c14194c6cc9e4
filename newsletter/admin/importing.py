"""Import by upload: the file is streamed to disk (never held whole in memory), previewed, then imported
by the CLI's own importer (``import_file``) in the background (``import_jobs``).

An upload is written chunk by chunk to a private temporary directory as it arrives,
checked as UTF-8 and counted (bytes, lines) on the way, and refused as soon as it passes
``MAX_IMPORT_BYTES``. It waits there, for the one who made it, between the column-mapping
preview and the import; the import deletes it.

The preview reads the header exactly as ``newsletter subscribers import`` does
(delimiter sniffing, the preset the header matches or the one chosen, the operator's
column choices), shows the first rows as they would come in, with their status, and
counts the rows after the header as the import will read them.
"""

from __future__ import annotations

import codecs
import csv
import os
import secrets
import shutil
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Protocol, TextIO

from starlette.concurrency import run_in_threadpool

from newsletter.errors import SubscriberError
from newsletter.subscriptions.formats import (
    FIELDS,
    PRESETS,
    ColumnPlan,
    plan_columns,
    read_row,
    sniff_delimiter,
)

HOLD_FOR = 1800.0  # seconds an upload waits for its import
SAMPLE_ROWS = 5
FORMATS = tuple(PRESETS)
# A 100,000-member export with every column of its tool is about 18 MB; this leaves room for
# ten times that while bounding what one editor can put on the server's disk.
MAX_IMPORT_BYTES = 256 * 1024 * 1024
COPY_CHUNK = 1 << 20


class AsyncReadable(Protocol):
    """What ``Uploads.receive_file`` reads: Starlette's UploadFile has this shape."""

    async def read(self, size: int = -1) -> bytes: ...


class UploadTooLarge(SubscriberError):
    """An upload passed MAX_IMPORT_BYTES; what was received of it is deleted."""

    def __init__(self) -> None:
        super().__init__(
            f"the file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB",
            hint="Split it, or use 'newsletter subscribers import' on the server.",
        )


@dataclass(frozen=True)
class Upload:
    owner: str  # the session's id hash, or "api"
    filename: str  # as the uploader named it (shown, never used as a path)
    path: Path  # where its bytes are, in the uploads directory
    size: int
    lines: int  # physical lines, the header's included (a quoted line break counts twice)
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
    records: int  # rows after the header that the import will read (blank lines are not rows)


class UploadWriter:
    """One upload arriving: its bytes go to ``path`` as they come, counted and checked as UTF-8.

    ``write`` raises UploadTooLarge past ``limit`` and SubscriberError when the bytes are not
    UTF-8; the caller deletes the file then (``Uploads.receive`` does).
    """

    def __init__(self, path: Path, filename: str, *, limit: int = MAX_IMPORT_BYTES) -> None:
        self.path, self.filename, self.limit = path, filename, limit
        self.size = self.newlines = 0
        self._last = b""
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge()
        try:
            self._decoder.decode(chunk)  # the decoded text is dropped at once: only the check is kept
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.filename) from exc
        self.newlines += chunk.count(b"\n")
        self._last = chunk[-1:]
        self._file.write(chunk)

    def close(self) -> int:
        """Finish the file; the number of physical lines in it."""
        self._file.close()
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.filename) from exc
        return self.newlines + (1 if self._last not in (b"", b"\n") else 0)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _not_utf8(filename: str) -> SubscriberError:
    return SubscriberError(
        f"{filename} is not UTF-8 text", hint="Save it as 'CSV UTF-8' and upload it again."
    )


class Uploads:
    """Uploads waiting on disk between preview and import, per process, in a private directory
    (mode 0700) that is removed with this object or at exit."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="newsletter-imports-"))
        self._held: dict[str, Upload] = {}
        self._lock = Lock()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.directory, ignore_errors=True)

    async def receive(self, owner: str, filename: str, chunks: AsyncIterator[bytes]) -> str:
        """Stream ``chunks`` to a new upload and hold it for ``owner``; its id.

        UploadTooLarge past MAX_IMPORT_BYTES, SubscriberError if it is not UTF-8 or empty;
        nothing is kept then. Disk writes run off the event loop.
        """
        upload_id = secrets.token_urlsafe(16)
        writer = UploadWriter(self.directory / f"{upload_id}.csv", filename)
        try:
            async for chunk in chunks:
                await run_in_threadpool(writer.write, chunk)
            lines = writer.close()
        except BaseException:
            writer.discard()
            raise
        if writer.size == 0:
            writer.discard()
            raise SubscriberError(f"{filename} is empty", hint="Choose the export file and upload it again.")
        upload = Upload(owner, filename, writer.path, writer.size, lines, time.monotonic())
        with self._lock:
            expired = [k for k, u in self._held.items() if upload.at - u.at >= HOLD_FOR]
            for key in expired:
                self._held.pop(key).path.unlink(missing_ok=True)
            self._held[upload_id] = upload
        return upload_id

    async def receive_file(self, owner: str, filename: str, file: AsyncReadable) -> str:
        """``receive`` from an already parsed form's file (Starlette's UploadFile), read in 1 MB chunks."""

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await file.read(COPY_CHUNK):
                yield chunk

        return await self.receive(owner, filename, chunks())

    def get(self, upload_id: str, owner: str) -> Upload:
        with self._lock:
            upload = self._held.get(upload_id)
        if upload is None or upload.owner != owner or time.monotonic() - upload.at > HOLD_FOR:
            raise SubscriberError(
                "that upload is gone (uploads wait 30 minutes, for the one who made them)",
                hint="Upload the file again.",
            )
        return upload

    def take(self, upload_id: str, owner: str) -> Upload:
        """The upload, no longer held: its import owns the file now (and deletes it when done)."""
        upload = self.get(upload_id, owner)
        with self._lock:
            self._held.pop(upload_id, None)
        return upload

    def drop(self, upload_id: str) -> None:
        with self._lock:
            upload = self._held.pop(upload_id, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete every waiting upload and the directory."""
        self._cleanup()


def open_upload(upload: Upload) -> TextIO:
    """The upload as text, read as ``import_file`` reads it (UTF-8, a BOM dropped, newlines kept)."""
    return upload.path.open(newline="", encoding="utf-8-sig")


def read_header(stream: TextIO, *, filename: str) -> tuple[str, tuple[str, ...]]:
    """The delimiter and the columns of the header line, as the importer reads them."""
    header_line = stream.readline()
    if not header_line.strip():
        raise SubscriberError(
            f"{filename} is empty: no header line", hint="The first line must name the columns."
        )
    delimiter = sniff_delimiter(header_line.rstrip("\r\n"))
    return delimiter, tuple(next(csv.reader([header_line], delimiter=delimiter)))


def check_columns(upload: Upload, *, fmt: str | None, mapping: dict[str, str]) -> ColumnPlan:
    """The column plan the import would use; SubscriberError (before any row is read) when it has none."""
    with open_upload(upload) as stream:
        _, header = read_header(stream, filename=upload.filename)
    return plan_columns(header, fmt=fmt, mapping=mapping, source=upload.filename)


def preview(upload_id: str, upload: Upload, *, fmt: str | None, mapping: dict[str, str]) -> MappingPreview:
    """What the import would read: the columns per field, the first rows, and how many rows there are."""
    with open_upload(upload) as stream:
        delimiter, header = read_header(stream, filename=upload.filename)
        plan = plan_columns(header, fmt=fmt, mapping=mapping, source=upload.filename)
        chosen = {name: header[i] for name, i in plan.columns.items()}
        if "name" not in chosen and plan.name_columns:
            chosen["name"] = ""  # the preset joins several columns
        rows: list[SampleRow] = []
        records = 0
        reader = csv.reader(stream, delimiter=delimiter)
        line = 2  # the header was line 1; a record starts on the line after the previous one ends
        try:
            for fields in reader:
                start, line = line, reader.line_num + 2
                if not any(f.strip() for f in fields):
                    continue  # a blank line is not a row, here as in the import
                records += 1
                if len(rows) < SAMPLE_ROWS:
                    try:
                        raw = read_row(plan, fields)
                        rows.append(SampleRow(start, raw.email, raw.name, raw.status.value, ""))
                    except SubscriberError as exc:
                        rows.append(SampleRow(start, "", "", "", exc.message))
        except csv.Error as exc:
            rows.append(SampleRow(line, "", "", "", f"not valid CSV ({exc}); the import stops here"))
    return MappingPreview(upload_id, upload.filename, header, plan, chosen, rows, records)


def mapping_from(form: dict[str, str]) -> dict[str, str]:
    """The operator's column choices (``map_<field>`` = a column name); empty ones are left to the preset."""
    return {name: form[f"map_{name}"] for name in FIELDS if form.get(f"map_{name}")}
