"""The API's editions and sending: list, detail, pause, resume, preview, test send, audience, send now."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel, Field
from spectree import Response as Resp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.context import Console, Refused
from newsletter.admin.endpoints.base import ERRORS, ApiError, Done, Paging, answer, audit, needs, spec
from newsletter.admin.security import client_of
from newsletter.errors import AudienceChanged
from newsletter.models import Edition


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


class PreviewQuery(BaseModel):
    email: str = Field(max_length=320)


class PreviewOut(BaseModel):
    email: str
    subject: str
    reports: list[str]
    html: str
    text: str
    note: str = Field(
        "", description="why the feed was not read now, and reports the settle window still holds"
    )


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
    readers: int = Field(description="readers an edition planned now would mail: confirm a send with it")
    held_back: int = Field(description="stored reports the settle window (reports.settle) still holds back")
    held_until: datetime | None = Field(description="when the last of them is released (UTC)")
    note: str = Field(description="why the feed was not read now; empty when it was")


def edition_out(e: Edition) -> dict[str, Any]:
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


@needs("viewer")
@spec.validate(query=Paging, resp=Resp(HTTP_200=EditionPage, **ERRORS), tags=["editions"])
async def list_editions(request: Request) -> Response:
    """Editions, newest first."""
    q: Paging = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    editions = await run_in_threadpool(console.store.editions.list_editions, limit=q.page * q.per_page)
    items = editions[(q.page - 1) * q.per_page :]
    return answer(
        EditionPage, {"items": [edition_out(e) for e in items], "page": q.page, "per_page": q.per_page}
    )


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
        **edition_out(edition),
        "failure_replies": [{"code": c, "reply": r, "count": n} for c, r, n in replies],
        "variants": [v.id for v in variants],
    }
    return answer(EditionDetail, data)


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=EditionOut, HTTP_400=ApiError, **ERRORS), tags=["editions"])
async def pause_edition(request: Request) -> Response:
    """Pause a sending edition (rows not yet sent wait)."""
    console: Console = request.app.state.console
    # The engine writes the audit entry, with the reason, as for every pause.
    edition = await run_in_threadpool(
        console.engine.pause,
        request.path_params["edition_id"],
        by=f"{request.state.operator.email} (API)",
        client=client_of(request),
    )
    return answer(EditionOut, edition_out(edition))


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=EditionOut, HTTP_400=ApiError, **ERRORS), tags=["editions"])
async def resume_edition(request: Request) -> Response:
    """Resume a paused edition in the background."""
    console: Console = request.app.state.console
    edition = await run_in_threadpool(
        console.engine.resume,
        request.path_params["edition_id"],
        by=f"{request.state.operator.email} (API)",
        client=client_of(request),
    )
    return answer(EditionOut, edition_out(edition))


@needs("editor")
@spec.validate(
    query=PreviewQuery, resp=Resp(HTTP_200=PreviewOut, HTTP_400=ApiError, **ERRORS), tags=["sending"]
)
async def preview(request: Request) -> Response:
    """The digest this reader would get now (empty subject and html when nothing is new)."""
    q: PreviewQuery = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    p = await run_in_threadpool(console.engine.preview, q.email)
    return answer(
        PreviewOut,
        {
            "email": p.subscriber.email,
            "subject": p.subject,
            "reports": [r.title for r in p.selection.reports],
            "html": p.html,
            "text": p.text,
            "note": "; ".join(n for n in (p.feed, str(p.held)) if n),
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
    return answer(Done, {"message": f"test sent to {me}"})


@needs("editor")
@spec.validate(
    query=AudienceQuery, resp=Resp(HTTP_200=Audience, HTTP_400=ApiError, **ERRORS), tags=["sending"]
)
async def audience(request: Request) -> Response:
    """How many readers an edition of ``schedule`` would mail now: the number to confirm a send with."""
    console: Console = request.app.state.console
    schedule = request.context.query.schedule  # type: ignore[attr-defined]
    counted = await run_in_threadpool(console.engine.audience, schedule)
    return answer(
        Audience,
        {
            "schedule": schedule,
            "readers": counted.readers,
            "held_back": len(counted.held.reports),
            "held_until": counted.held.until,
            "note": counted.feed or str(counted.held),
        },
    )


@needs("editor")
@spec.validate(
    json=SendNow,
    resp=Resp(HTTP_202=EditionOut, HTTP_409=ApiError, HTTP_400=ApiError, **ERRORS),
    tags=["sending"],
)
async def send_now(request: Request) -> Response:
    """Start an edition of a schedule now for exactly ``confirm_count`` readers.

    The engine reads the feed and plans under the schedule's lock; when the plan is not
    ``confirm_count`` it is refused (409) before any row is written, and nothing is sent.
    """
    body: SendNow = request.context.json  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    if body.confirm_count <= 0:
        raise Refused(
            409, "confirm_count must be the audience, and at least 1", hint="GET /api/v1/send/audience."
        )
    try:
        started = await run_in_threadpool(
            partial(console.engine.start_send, body.schedule, confirmed=body.confirm_count)
        )
    except AudienceChanged as exc:
        raise Refused(409, exc.message, hint=exc.hint) from exc
    await run_in_threadpool(audit, request, "edition.send", started.edition.key, f"{started.readers} readers")
    return answer(EditionOut, edition_out(started.edition), 202)
