"""Importing readers by upload: the file, its column choices, the import."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.context import Refused
from newsletter.admin.importing import FORMATS, mapping_from, run_import
from newsletter.admin.importing import preview as preview_import
from newsletter.admin.pages.base import PageGroup
from newsletter.errors import NewsletterError
from newsletter.subscriptions.formats import FIELDS


class ImportPages(PageGroup):
    async def import_form(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "editor")
        return self.c.page(
            request,
            "import.html",
            signed=signed,
            title="Import readers",
            formats=FORMATS,
            preview=None,
            error="",
        )

    async def import_preview(self, request: Request) -> Response:
        """Upload (or change the column choices of) a file: show what the import would read."""
        signed, form = await self.c.posted(request, "editor", upload=True)
        fmt = str(form.get("format") or "") or None
        if fmt is not None and fmt not in FORMATS:
            raise Refused(400, f"unknown format {fmt!r}")
        upload_id = str(form.get("upload") or "")
        owner = signed.session.id_hash
        file = form.get("file")
        if isinstance(file, UploadFile) and file.filename:
            data = await file.read()
            upload_id = await run_in_threadpool(self.c.uploads.hold, owner, file.filename[:200], data)
        elif not upload_id:
            raise Refused(400, "choose a CSV file to upload")
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        try:
            upload = self.c.uploads.get(upload_id, owner)
            shown = await run_in_threadpool(preview_import, upload_id, upload, fmt=fmt, mapping=mapping)
        except NewsletterError as exc:
            return self.c.page(
                request,
                "import.html",
                signed=signed,
                status=400,
                title="Import readers",
                formats=FORMATS,
                preview=None,
                error=exc.message,
            )
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
        signed, form = await self.c.posted(request, "editor")
        fmt = str(form.get("format") or "") or None
        upload_id = str(form.get("upload") or "")
        upload = self.c.uploads.get(upload_id, signed.session.id_hash)
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        result = await run_in_threadpool(
            run_import,
            self.store,
            upload,
            fmt=None if fmt is None else fmt,
            mapping=mapping,
            update=form.get("update") == "1",
        )
        self.c.uploads.drop(upload_id)
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "readers.import",
            upload.filename,
            f"{result.format}: {result.summary()}",
        )
        return self.c.page(
            request,
            "import_done.html",
            signed=signed,
            title="Import finished",
            result=result,
            bad=result.bad_rows[:50],
        )
