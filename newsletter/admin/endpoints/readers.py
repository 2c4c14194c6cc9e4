"""The API's readers: search, one reader, add, change, reactivate, remove."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from spectree import Response as Resp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.context import Console, Refused
from newsletter.admin.endpoints.base import ERRORS, ApiError, Done, Paging, answer, audit, needs, spec
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.subscriptions import add_subscriber, parse_topics


class ReaderQuery(Paging):
    q: str = Field("", max_length=320, description="part of the address or name")
    status: SubscriberStatus | None = None


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


def reader_out(s: Subscriber) -> dict[str, Any]:
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
        "items": [reader_out(s) for s in found],
        "page": q.page,
        "per_page": q.per_page,
        "total": total,
        "pages": max(1, math.ceil(total / q.per_page)),
    }
    return answer(ReaderPage, data)


@needs("viewer")
@spec.validate(resp=Resp(HTTP_200=ReaderOut, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def get_reader(request: Request) -> Response:
    console: Console = request.app.state.console
    reader = await run_in_threadpool(
        console.store.subscribers.get_subscriber, request.path_params["reader_id"]
    )
    if reader is None:
        raise Refused(404, "no such reader")
    return answer(ReaderOut, reader_out(reader))


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
    return answer(ReaderOut, reader_out(reader), 201 if created else 200)


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
    return answer(ReaderOut, reader_out(fresh or reader))


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
    return answer(ReaderOut, reader_out(fresh or reader))


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
    return answer(Done, {"message": f"{reader.email} removed"})
