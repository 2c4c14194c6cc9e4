"""The API's import: a CSV sent as the request body, read with the CLI's presets."""

from __future__ import annotations

from pydantic import BaseModel, Field
from spectree import Response as Resp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.context import MAX_UPLOAD, Console, Refused
from newsletter.admin.endpoints.base import ERRORS, ApiError, answer, audit, needs, spec
from newsletter.admin.importing import Upload, run_import
from newsletter.subscriptions.formats import parse_mapping


class ImportQuery(BaseModel):
    format: str | None = Field(
        None,
        max_length=20,
        description="the tool that made the file (newsletter, mailchimp, listmonk, substack, ghost); default: detected from the header",
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


@needs("editor")
@spec.validate(
    query=ImportQuery,
    resp=Resp(HTTP_200=ImportOut, HTTP_400=ApiError, HTTP_413=ApiError, **ERRORS),
    tags=["readers"],
)
async def import_readers(request: Request) -> Response:
    """Import a CSV sent as the request body (text/csv, UTF-8, at most 5 MB) with the CLI's presets."""
    q: ImportQuery = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD:
            raise Refused(
                413,
                "the file is larger than 5 MB",
                hint="Split it, or use 'newsletter subscribers import' on the server.",
            )
    mapping = parse_mapping(q.map)
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refused(400, "the body is not UTF-8 text", hint="Send the CSV as UTF-8.") from exc
    upload = Upload(owner="api", filename="request body", text=text, at=0.0)
    result = await run_in_threadpool(
        run_import, console.store, upload, fmt=q.format, mapping=mapping, update=q.update
    )
    await run_in_threadpool(
        audit, request, "readers.import", "request body", f"{result.format}: {result.summary()}"
    )
    data = {
        "format": result.format,
        "added": result.added,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "suppressed": result.suppressed,
        "invalid": result.invalid,
        "bad_rows": [{"line": b.line, "reason": b.reason} for b in result.bad_rows[:1000]],
    }
    return answer(ImportOut, data)
