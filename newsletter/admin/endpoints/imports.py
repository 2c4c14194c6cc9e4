"""The API's import: a CSV sent as the request body, streamed to disk and imported in the background
with the CLI's importer and presets; its job is polled for progress and the result."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel, Field
from spectree import Response as Resp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.context import MAX_UPLOAD, Console, Refused
from newsletter.admin.endpoints.base import ERRORS, ApiError, answer, audit, needs, spec
from newsletter.admin.import_jobs import ImportJob
from newsletter.admin.importing import UploadTooLarge, check_columns
from newsletter.errors import NewsletterError
from newsletter.subscriptions.formats import parse_mapping


class ImportQuery(BaseModel):
    format: str | None = Field(
        None,
        max_length=20,
        description="the tool that made the file (newsletter, mailchimp, listmonk, substack, ghost);"
        " default: detected from the header",
    )
    update: bool = Field(
        False, description="also update names, topics and cadences of readers already on the list"
    )
    map: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="FIELD=COLUMN, e.g. email=E-Mail (repeat for several fields)",
    )


class BadRowOut(BaseModel):
    line: int
    reason: str


class ImportOut(BaseModel):
    format: str
    added: int
    updated: int
    unchanged: int
    suppressed: int
    invalid: int
    bad_rows: list[BadRowOut]


class ImportJobOut(BaseModel):
    id: str
    file: str
    state: str = Field(description="waiting, importing, finished or failed")
    done: int = Field(description="lines read so far (after the header)")
    total: int = Field(description="lines in the file after the header")
    error: str
    hint: str
    summary: str
    result: ImportOut | None = Field(description="what the import did, once finished")


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        yield chunk


@needs("editor")
@spec.validate(
    query=ImportQuery,
    resp=Resp(HTTP_202=ImportJobOut, HTTP_400=ApiError, HTTP_413=ApiError, **ERRORS),
    tags=["readers"],
)
async def import_readers(request: Request) -> Response:
    """Import a CSV sent as the request body (text/csv, UTF-8, at most 256 MB) with the CLI's presets.

    The body is streamed to disk and its header checked; the import then runs in the background:
    202 with the job, whose ``Location`` (``GET /import/ID``) gives its progress and result."""
    q: ImportQuery = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    mapping = parse_mapping(q.map)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD:
        raise Refused(413, UploadTooLarge().message, hint=UploadTooLarge().hint)
    try:
        upload_id = await console.uploads.receive("api", "request body", _body(request))
    except UploadTooLarge as exc:
        raise Refused(413, exc.message, hint=exc.hint) from exc
    except NewsletterError as exc:
        raise Refused(400, exc.message, hint=exc.hint) from exc
    upload = console.uploads.take(upload_id, "api")
    try:
        await run_in_threadpool(check_columns, upload, fmt=q.format, mapping=mapping)
    except NewsletterError:
        upload.path.unlink(missing_ok=True)
        raise

    def finished(job: ImportJob) -> None:
        audit(request, "readers.import", "request body", job.audit_detail)

    job = console.imports.start(
        upload,
        fmt=q.format,
        mapping=mapping,
        update=q.update,
        started_by=request.state.operator.email + " (API)",
        on_finish=finished,
    )
    response = answer(ImportJobOut, job.as_dict(), status=202)
    response.headers["Location"] = f"/api/v1/import/{job.id}"
    return response


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=ImportJobOut, **ERRORS), tags=["readers"])
async def import_job(request: Request) -> Response:
    """An import started through the API or the console: its progress, and at the end what it did."""
    console: Console = request.app.state.console
    try:
        job = console.imports.get(str(request.path_params["job_id"]))
    except NewsletterError as exc:
        raise Refused(404, exc.message, hint=exc.hint) from exc
    return answer(ImportJobOut, job.as_dict())
