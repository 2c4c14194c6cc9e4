"""Imports in the background: an upload is imported by the CLI's importer (``import_file``) in a worker
thread while the console page and the API poll its progress, as listmonk's importer does.

One import runs at a time per process (the others wait their turn in order), so two large
files never fight over the database. A job's progress is the lines read so far against the
lines of the file (both counted the same way, physical lines after the header), updated
after each batch the importer commits, and never more than the total. The job owns its
upload: the file is deleted when the job ends, whatever the outcome. Rows committed before
a failure stay imported; importing the file again skips them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from newsletter.admin.importing import Upload
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.storage.store import Store
from newsletter.subscriptions.importer import ImportResult, import_file

log = logging.getLogger("newsletter.admin.imports")
KEEP = 50  # finished jobs remembered for their pages
WAITING, IMPORTING, FINISHED, FAILED = "waiting", "importing", "finished", "failed"


@dataclass
class ImportJob:
    """One import: what it reads, how far it is, and how it ended (``result`` or ``error``)."""

    id: str
    filename: str
    started_by: str
    total: int  # lines after the header
    format: str | None
    done: int = 0
    state: str = WAITING
    result: ImportResult | None = None
    error: str = ""
    hint: str = ""
    created: float = field(default_factory=time.time)
    ended: float | None = None

    @property
    def running(self) -> bool:
        return self.state in (WAITING, IMPORTING)

    @property
    def audit_detail(self) -> str:
        """What the audit log keeps of an ended import."""
        if self.result is not None:
            return f"{self.result.format}: {self.result.summary()}"
        return f"failed after {self.done:,} of {self.total:,} lines: {self.error}"

    def advance(self, lines_read: int) -> None:
        """The importer's progress hook: ``lines_read`` counts the header too."""
        self.done = min(max(lines_read - 1, 0), self.total)

    def as_dict(self) -> dict[str, Any]:
        """The job as the API and the console's poll show it."""
        result = self.result
        return {
            "id": self.id,
            "file": self.filename,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "hint": self.hint,
            "summary": result.summary() if result else "",
            "result": None
            if result is None
            else {
                "format": result.format,
                "added": result.added,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "suppressed": result.suppressed,
                "invalid": result.invalid,
                "bad_rows": [{"line": b.line, "reason": b.reason} for b in result.bad_rows[:1000]],
            },
        }


Finished = Callable[[ImportJob], None]


class ImportJobs:
    """The process's imports: started here, run one at a time in a worker thread, looked up by id."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._jobs: dict[str, ImportJob] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsletter-import")

    def start(
        self,
        upload: Upload,
        *,
        fmt: str | None,
        mapping: dict[str, str],
        update: bool,
        started_by: str,
        on_finish: Finished | None = None,
    ) -> ImportJob:
        """Queue ``upload`` for import and return its job at once; the job deletes the file when it ends.

        ``on_finish`` runs in the worker after the import (the audit entry), before ``wait`` returns.
        """
        job = ImportJob(secrets.token_urlsafe(12), upload.filename, started_by, max(upload.lines - 1, 0), fmt)
        with self._lock:
            finished = [j.id for j in self._jobs.values() if not j.running]
            for old in finished[: max(len(finished) - KEEP + 1, 0)]:
                self._jobs.pop(old, None)
                self._futures.pop(old, None)
            self._jobs[job.id] = job
            self._futures[job.id] = self._worker.submit(
                self._run, job, upload, mapping=mapping, update=update, on_finish=on_finish
            )
        return job

    def get(self, job_id: str) -> ImportJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise SubscriberError(
                "no such import (finished imports are remembered until the console restarts)",
                hint="See the readers list and the audit log for what was imported.",
            )
        return job

    def recent(self, limit: int = 10) -> list[ImportJob]:
        """The newest jobs first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda j: j.created, reverse=True)[:limit]

    def wait(self, job_id: str, timeout: float | None = None) -> ImportJob:
        """Block until the job has ended (tests, shutdown); the job."""
        with self._lock:
            future = self._futures.get(job_id)
        if future is not None:
            future.result(timeout=timeout)
        return self.get(job_id)

    def wait_idle(self, timeout: float | None = None) -> None:
        with self._lock:
            futures = list(self._futures.values())
        for future in futures:
            future.result(timeout=timeout)

    def _run(
        self,
        job: ImportJob,
        upload: Upload,
        *,
        mapping: dict[str, str],
        update: bool,
        on_finish: Finished | None,
    ) -> None:
        job.state = IMPORTING
        try:
            job.result = import_file(
                self.store,
                upload.path,
                source=upload.filename,
                fmt=job.format,
                mapping=mapping,
                update=update,
                progress=job.advance,
            )
            job.done = job.total
        except NewsletterError as exc:
            job.error, job.hint = exc.message, exc.hint
        except Exception:
            log.exception("import of %s stopped", upload.filename)
            job.error = "the import stopped on an unexpected error"
            job.hint = (
                "See the server log. Rows imported before it are kept; importing the file again skips them."
            )
        finally:
            upload.path.unlink(missing_ok=True)
            job.ended = time.time()
        if on_finish is not None:
            try:
                on_finish(job)
            except Exception:  # the import itself is done; a failed audit write is logged, not hidden
                log.exception("recording the import of %s failed", upload.filename)
        job.state = FINISHED if job.result is not None else FAILED
