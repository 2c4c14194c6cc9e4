"""The REST API under /api/v1: the console's operations for scripts, with an OpenAPI document.

Requests and answers are pydantic models; spectree validates them and builds the
OpenAPI document from them (``/api/v1/openapi.json``, browsable at ``/api/v1/docs``).
Every call needs ``Authorization: Bearer nlk_...``: a live token whose owner's role
allows the call (viewer reads; editor previews, test-sends, sends, pauses, edits
readers). Lists are paginated (``page``, ``per_page``). Writes are audited. No
cookies are read here, so cross-site requests cannot ride on a console session.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from spectree import Response as Resp
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.admin.accounts import role_at_least
from newsletter.admin.context import MAX_UPLOAD, Console, Refused
from newsletter.admin.importing import Upload, run_import
from newsletter.admin.security import client_of
from newsletter.models import Cadence, Edition, Subscriber, SubscriberStatus
from newsletter.subscriptions import add_subscriber, parse_topics
from newsletter.subscriptions.formats import parse_mapping

DOCS_PATH = "api/v1/docs"
spec = SpecTree(
    "starlette",
    title="Newsletter operator API",
    version="1",
    path=DOCS_PATH,
    annotations=False,
    mode="strict",  # the document lists the API only, not the console's pages
    security_schemes=[
        SecurityScheme(name="token", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer"))
    ],
    security={"token": []},
)


# -- models ------------------------------------------------------------------------------------


class Paging(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=200)


class ReaderQuery(Paging):
    q: str = Field("", max_length=320, description="part of the address or name")
    status: SubscriberStatus | None = None


class EditionOut(BaseModel):
    id: int
    key: str
    schedule: str
    status: str
    reason: str
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]


class EditionPage(BaseModel):
    items: list[EditionOut]
    page: int
    per_page: int


class FailureReply(BaseModel):
    code: int | None
    reply: str
    count: int


class EditionDetail(EditionOut):
    failure_replies: list[FailureReply]
    variants: list[int]


class ReaderOut(BaseModel):
    id: int
    email: str
    name: str
    status: str
    topics: list[str]
    cadence: str
    paused: bool
    created_at: datetime | None
    last_digest_at: datetime | None


class ReaderPage(BaseModel):
    items: list[ReaderOut]
    page: int
    per_page: int
    total: int
    pages: int


class NewReader(BaseModel):
    email: str = Field(max_length=320)
    name: str = Field("", max_length=200)
    topics: list[str] = Field(default_factory=list, max_length=50)


class ReaderChange(BaseModel):
    topics: list[str] | None = Field(
        None, max_length=50, description="empty for every topic; absent: unchanged"
    )
    cadence: Cadence | None = None
    paused: bool | None = None


class PreviewQuery(BaseModel):
    email: str = Field(max_length=320)


class PreviewOut(BaseModel):
    email: str
    subject: str
    reports: list[str]
    html: str
    text: str


class TestSend(BaseModel):
    email: str = Field(max_length=320, description="the reader whose next digest is mailed to you")


class SendNow(BaseModel):
    schedule: str = Field(max_length=50, description="daily, weekly or manual (everyone)")
    confirm_count: int = Field(
        description="the reader count from GET /api/v1/send/audience; a mismatch is refused (409)"
    )


class AudienceQuery(BaseModel):
    schedule: str = Field(max_length=50, description="daily, weekly or manual (everyone)")


class Audience(BaseModel):
    schedule: str
    readers: int


class Done(BaseModel):
    ok: bool = True
    message: str = ""


class ApiError(BaseModel):
    error: str
    hint: str = ""


# -- guard ------------------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def needs(role: str) -> Callable[[Endpoint], Endpoint]:
    """The call needs a live token of at least ``role``; ``request.state.operator`` is its owner."""

    def decorate(func: Endpoint) -> Endpoint:
        @functools.wraps(func)
        async def guarded(request: Request) -> Response:
            console: Console = request.app.state.console
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            found = (
                await run_in_threadpool(console.accounts.token_user, token.strip())
                if scheme.lower() == "bearer"
                else None
            )
            if found is None:
                raise Refused(
                    401,
                    "a valid API token is needed (Authorization: Bearer nlk_...)",
                    hint="Make one on the console's API tokens page.",
                )
            _token, operator = found
            if not role_at_least(operator.role, role):
                raise Refused(403, f"this call needs the {role} role; the token's owner is {operator.role}")
            request.state.operator = operator
            return await func(request)

        return guarded

    return decorate


def audit(request: Request, action: str, target: str = "", detail: str = "") -> None:
    console: Console = request.app.state.console
    console.store.accounts.audit(
        actor=request.state.operator.email,
        action=action,
        target=target,
        detail=detail + " (API)",
        client=client_of(request),
    )


def _edition(e: Edition) -> dict[str, Any]:
    return {
        "id": e.id,
        "key": e.key,
        "schedule": e.schedule,
        "status": e.status.value,
        "reason": e.reason,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "counts": e.counts,
    }


def _reader(s: Subscriber) -> dict[str, Any]:
    return {
        "id": s.id,
        "email": s.email,
        "name": s.name,
        "status": s.status.value,
        "topics": list(s.topics),
        "cadence": s.cadence.value,
        "paused": s.paused,
        "created_at": s.created_at,
        "last_digest_at": s.last_digest_at,
    }


def _json(model: type[BaseModel], data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_validate(data).model_dump(mode="json"), status_code=status)


ERRORS = {"HTTP_401": ApiError, "HTTP_403": ApiError}


# -- endpoints -----------------------------------------------------------------------------------------


@needs("viewer")
@spec.validate(query=Paging, resp=Resp(HTTP_200=EditionPage, **ERRORS), tags=["editions"])
async def list_editions(request: Request) -> Response:
    """Editions, newest first."""
    q: Paging = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    editions = await run_in_threadpool(console.store.editions.list_editions, limit=q.page * q.per_page)
    items = editions[(q.page - 1) * q.per_page :]
    return _json(EditionPage, {"items": [_edition(e) for e in items], "page": q.page, "per_page": q.per_page})


@needs("viewer")
@spec.validate(resp=Resp(HTTP_200=EditionDetail, HTTP_404=ApiError, **ERRORS), tags=["editions"])
async def get_edition(request: Request) -> Response:
    """One edition with its counts per delivery state, most common failure replies and variants."""
    console: Console = request.app.state.console
    edition_id = request.path_params["edition_id"]
    edition = await run_in_threadpool(console.store.editions.get_edition, edition_id)
    if edition is None:
        raise Refused(404, f"no edition #{edition_id}")
    replies = await run_in_threadpool(console.store.outbox.failure_replies, edition_id)
    variants = await run_in_threadpool(console.store.editions.list_variants, edition_id)
    data = {
        **_edition(edition),
        "failure_replies": [{"code": c, "reply": r, "count": n} for c, r, n in replies],
        "variants": [v.id for v in variants],
    }
    return _json(EditionDetail, data)


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=EditionOut, HTTP_400=ApiError, **ERRORS), tags=["editions"])
async def pause_edition(request: Request) -> Response:
    """Pause a sending edition (rows not yet sent wait)."""
    console: Console = request.app.state.console
    edition = await run_in_threadpool(
        console.engine.pause, request.path_params["edition_id"], by=request.state.operator.email
    )
    await run_in_threadpool(audit, request, "edition.pause", edition.key)
    return _json(EditionOut, _edition(edition))


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=EditionOut, HTTP_400=ApiError, **ERRORS), tags=["editions"])
async def resume_edition(request: Request) -> Response:
    """Resume a paused edition in the background."""
    console: Console = request.app.state.console
    edition = await run_in_threadpool(console.engine.resume, request.path_params["edition_id"])
    await run_in_threadpool(audit, request, "edition.resume", edition.key)
    return _json(EditionOut, _edition(edition))


@needs("viewer")
@spec.validate(query=ReaderQuery, resp=Resp(HTTP_200=ReaderPage, **ERRORS), tags=["readers"])
async def list_readers(request: Request) -> Response:
    """Readers by address, searched and paged."""
    q: ReaderQuery = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    found, total = await run_in_threadpool(
        console.store.console.search_subscribers,
        query=q.q.strip(),
        status=q.status.value if q.status else None,
        limit=q.per_page,
        offset=(q.page - 1) * q.per_page,
    )
    data = {
        "items": [_reader(s) for s in found],
        "page": q.page,
        "per_page": q.per_page,
        "total": total,
        "pages": max(1, math.ceil(total / q.per_page)),
    }
    return _json(ReaderPage, data)


@needs("viewer")
@spec.validate(resp=Resp(HTTP_200=ReaderOut, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def get_reader(request: Request) -> Response:
    console: Console = request.app.state.console
    reader = await run_in_threadpool(
        console.store.subscribers.get_subscriber, request.path_params["reader_id"]
    )
    if reader is None:
        raise Refused(404, "no such reader")
    return _json(ReaderOut, _reader(reader))


@needs("editor")
@spec.validate(
    json=NewReader,
    resp=Resp(HTTP_201=ReaderOut, HTTP_200=ReaderOut, HTTP_400=ApiError, **ERRORS),
    tags=["readers"],
)
async def create_reader(request: Request) -> Response:
    """Add an active reader (an existing address is returned unchanged, 200)."""
    body: NewReader = request.context.json  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    reader, created = await run_in_threadpool(
        add_subscriber, console.store, body.email, name=body.name, topics=body.topics
    )
    await run_in_threadpool(audit, request, "reader.add" if created else "reader.add-existing", reader.email)
    return _json(ReaderOut, _reader(reader), 201 if created else 200)


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=ReaderOut, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def reactivate_reader(request: Request) -> Response:
    console: Console = request.app.state.console
    store = console.store
    reader = await run_in_threadpool(store.subscribers.get_subscriber, request.path_params["reader_id"])
    if reader is None:
        raise Refused(404, "no such reader")
    await run_in_threadpool(
        store.subscribers.set_status,
        reader.id,
        SubscriberStatus.ACTIVE,
        reason=f"reactivated by {request.state.operator.email}",
    )
    await run_in_threadpool(audit, request, "reader.reactivate", reader.email, f"was {reader.status.value}")
    fresh = await run_in_threadpool(store.subscribers.get_subscriber, reader.id)
    return _json(ReaderOut, _reader(fresh or reader))


@needs("editor")
@spec.validate(
    json=ReaderChange,
    resp=Resp(HTTP_200=ReaderOut, HTTP_400=ApiError, HTTP_404=ApiError, **ERRORS),
    tags=["readers"],
)
async def change_reader(request: Request) -> Response:
    """Change a reader's topics, cadence or pause (fields left out stay as they are)."""
    body: ReaderChange = request.context.json  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    store = console.store
    reader = await run_in_threadpool(store.subscribers.get_subscriber, request.path_params["reader_id"])
    if reader is None:
        raise Refused(404, "no such reader")
    topics = parse_topics(body.topics) if body.topics is not None else reader.topics
    cadence = body.cadence or reader.cadence
    paused = reader.paused if body.paused is None else body.paused
    await run_in_threadpool(
        store.subscribers.update_preferences, reader.id, topics=topics, cadence=cadence, paused=paused
    )
    await run_in_threadpool(
        audit,
        request,
        "reader.edit",
        reader.email,
        f"topics {';'.join(topics) or 'all'}, {cadence.value}{', paused' if paused else ''}",
    )
    fresh = await run_in_threadpool(store.subscribers.get_subscriber, reader.id)
    return _json(ReaderOut, _reader(fresh or reader))


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=Done, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def delete_reader(request: Request) -> Response:
    """Remove a reader and forget their delivery history."""
    console: Console = request.app.state.console
    reader = await run_in_threadpool(
        console.store.subscribers.get_subscriber, request.path_params["reader_id"]
    )
    if reader is None:
        raise Refused(404, "no such reader")
    await run_in_threadpool(console.store.subscribers.remove_subscriber, reader.email)
    await run_in_threadpool(audit, request, "reader.remove", reader.email)
    return _json(Done, {"message": f"{reader.email} removed"})


@needs("editor")
@spec.validate(
    query=PreviewQuery, resp=Resp(HTTP_200=PreviewOut, HTTP_400=ApiError, **ERRORS), tags=["sending"]
)
async def preview(request: Request) -> Response:
    """The digest this reader would get now (empty subject and html when nothing is new)."""
    q: PreviewQuery = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    p = await run_in_threadpool(console.engine.preview, q.email)
    return _json(
        PreviewOut,
        {
            "email": p.subscriber.email,
            "subject": p.subject,
            "reports": [r.title for r in p.selection.reports],
            "html": p.html,
            "text": p.text,
        },
    )


@needs("editor")
@spec.validate(json=TestSend, resp=Resp(HTTP_200=Done, HTTP_400=ApiError, **ERRORS), tags=["sending"])
async def test_send(request: Request) -> Response:
    """Mail a reader's next digest to the token's owner, marked as a test."""
    body: TestSend = request.context.json  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    me = request.state.operator.email
    await run_in_threadpool(console.engine.send_test, body.email, me)
    await run_in_threadpool(audit, request, "preview.test-send", body.email, f"to {me}")
    return _json(Done, {"message": f"test sent to {me}"})


@needs("editor")
@spec.validate(
    query=AudienceQuery, resp=Resp(HTTP_200=Audience, HTTP_400=ApiError, **ERRORS), tags=["sending"]
)
async def audience(request: Request) -> Response:
    """How many readers an edition of ``schedule`` would mail now: the number to confirm a send with."""
    console: Console = request.app.state.console
    schedule = request.context.query.schedule  # type: ignore[attr-defined]
    readers = await run_in_threadpool(console.engine.audience, schedule)
    return _json(Audience, {"schedule": schedule, "readers": readers})


@needs("editor")
@spec.validate(
    json=SendNow,
    resp=Resp(HTTP_202=EditionOut, HTTP_409=ApiError, HTTP_400=ApiError, **ERRORS),
    tags=["sending"],
)
async def send_now(request: Request) -> Response:
    """Start an edition of a schedule now; refused (409) unless confirm_count equals the audience."""
    body: SendNow = request.context.json  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    readers = await run_in_threadpool(console.engine.audience, body.schedule)
    if body.confirm_count != readers or readers == 0:
        raise Refused(
            409,
            f"confirm_count is {body.confirm_count} but {readers} readers would get this edition now",
            hint="GET /api/v1/send/audience and confirm that number.",
        )
    edition = await run_in_threadpool(console.engine.start_send, body.schedule)
    await run_in_threadpool(audit, request, "edition.send", edition.key, f"{readers} readers")
    return _json(EditionOut, _edition(edition), 202)


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
    return _json(ImportOut, data)


# -- the document ------------------------------------------------------------------------------------------


def token_or_session(func: Endpoint) -> Endpoint:
    """For the document and its docs page (GETs, which change nothing): a token, or a console session in a browser."""
    with_token = needs("viewer")(func)

    @functools.wraps(func)
    async def guarded(request: Request) -> Response:
        if request.headers.get("authorization"):
            return await with_token(request)
        console: Console = request.app.state.console
        await console.signed_in(request)
        return await func(request)

    return guarded


@token_or_session
async def openapi(request: Request) -> Response:
    return JSONResponse(spec.spec)


@token_or_session
async def docs(request: Request) -> Response:
    template = spec.config.page_templates["swagger"]
    return HTMLResponse(
        template.format(
            spec_url="/api/v1/openapi.json", spec_path=DOCS_PATH, **spec.config.swagger_oauth2_config()
        )
    )


def api_routes(console: Console) -> list[BaseRoute]:
    return [
        Route("/api/v1/editions", list_editions, methods=["GET"]),
        Route("/api/v1/editions/{edition_id:int}", get_edition, methods=["GET"]),
        Route("/api/v1/editions/{edition_id:int}/pause", pause_edition, methods=["POST"]),
        Route("/api/v1/editions/{edition_id:int}/resume", resume_edition, methods=["POST"]),
        Route("/api/v1/readers", list_readers, methods=["GET"]),
        Route("/api/v1/readers", create_reader, methods=["POST"]),
        Route("/api/v1/readers/{reader_id:int}", get_reader, methods=["GET"]),
        Route("/api/v1/readers/{reader_id:int}", delete_reader, methods=["DELETE"]),
        Route("/api/v1/readers/{reader_id:int}", change_reader, methods=["PATCH"]),
        Route("/api/v1/readers/{reader_id:int}/reactivate", reactivate_reader, methods=["POST"]),
        Route("/api/v1/import", import_readers, methods=["POST"]),
        Route("/api/v1/preview", preview, methods=["GET"]),
        Route("/api/v1/test-send", test_send, methods=["POST"]),
        Route("/api/v1/send/audience", audience, methods=["GET"]),
        Route("/api/v1/send", send_now, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/v1/docs", docs, methods=["GET"]),
    ]


def register_api(app: Starlette) -> None:
    """Let spectree read the app's routes for the document (its own unauthenticated doc routes are not added)."""
    spec.app = app
