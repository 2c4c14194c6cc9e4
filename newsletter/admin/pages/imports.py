"""Importing readers by upload: the file (streamed to disk), its column choices, the import in the
background and its page, which follows the progress."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from newsletter.admin.accounts import SignedIn
from newsletter.admin.context import Refused
from newsletter.admin.import_jobs import ImportJob
from newsletter.admin.importing import (
    FORMATS,
    MAX_IMPORT_BYTES,
    UploadTooLarge,
    check_columns,
    mapping_from,
)
from newsletter.admin.importing import preview as preview_import
from newsletter.admin.pages.base import PageGroup, see_other
from newsletter.errors import NewsletterError
from newsletter.subscriptions.formats import FIELDS


class ImportPages(PageGroup):
    def _form(self, request: Request, signed: SignedIn, *, error: str = "", status: int = 200) -> Response:
        return self.c.page(
            request,
            "import.html",
            signed=signed,
            status=status,
            title="Import readers",
            formats=FORMATS,
            preview=None,
            error=error,
            jobs=self.c.imports.recent(),
            max_mb=MAX_IMPORT_BYTES // (1024 * 1024),
        )

    async def import_form(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "editor")
        return self._form(request, signed)

    async def import_preview(self, request: Request) -> Response:
        """Upload (or change the column choices of) a file: show what the import would read."""
        signed, form = await self.c.posted(request, "editor", upload=True)
        fmt = str(form.get("format") or "") or None
        if fmt is not None and fmt not in FORMATS:
            raise Refused(400, f"unknown format {fmt!r}")
        upload_id = str(form.get("upload") or "")
        owner = signed.session.id_hash
        file = form.get("file")
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        try:
            if isinstance(file, UploadFile) and file.filename:
                try:  # from the parser's spooled file to the uploads directory, 1 MB at a time
                    upload_id = await self.c.uploads.receive_file(owner, file.filename[:200], file)
                finally:
                    await form.close()
            elif not upload_id:
                raise Refused(400, "choose a CSV file to upload")
            upload = self.c.uploads.get(upload_id, owner)
            shown = await run_in_threadpool(preview_import, upload_id, upload, fmt=fmt, mapping=mapping)
        except UploadTooLarge as exc:
            raise Refused(413, exc.message, hint=exc.hint) from exc
        except NewsletterError as exc:
            return self._form(request, signed, error=exc.message, status=400)
        return self.c.page(
            request,
            "import.html",
            signed=signed,
            title="Import readers: check the columns",
            formats=FORMATS,
            preview=shown,
            fields=FIELDS,
            fmt=fmt or "",
            error="",
        )

    async def import_run(self, request: Request) -> Response:
        """Start the import in the background and go to its page."""
        signed, form = await self.c.posted(request, "editor")
        fmt = str(form.get("format") or "") or None
        upload_id = str(form.get("upload") or "")
        owner = signed.session.id_hash
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        await run_in_threadpool(check_columns, self.c.uploads.get(upload_id, owner), fmt=fmt, mapping=mapping)
        upload = self.c.uploads.take(upload_id, owner)
        actor = signed.operator.email

        def finished(job: ImportJob) -> None:
            self.c.audit(request, actor, "readers.import", job.filename, job.audit_detail)

        job = self.c.imports.start(
            upload,
            fmt=fmt,
            mapping=mapping,
            update=form.get("update") == "1",
            started_by=actor,
            on_finish=finished,
        )
        return see_other(f"/admin/import/jobs/{job.id}")

    async def import_job(self, request: Request) -> Response:
        """An import's page: its progress while it runs (console.js follows it), then what it did."""
        signed = await self.c.signed_in(request, "editor")
        job = self.c.imports.get(str(request.path_params["job_id"]))
        title = (
            f"Importing {job.filename}"
            if job.running
            else ("Import finished" if job.result is not None else "Import failed")
        )
        return self.c.page(request, "import_job.html", signed=signed, title=title, job=job)

    async def import_job_json(self, request: Request) -> Response:
        await self.c.signed_in(request, "editor")
        job = self.c.imports.get(str(request.path_params["job_id"]))
        return JSONResponse(job.as_dict(), headers={"Cache-Control": "no-store"})
