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
from newsletter.admin.endpoints.base import ERRORS, ApiError, Done, Paging, actor_of, answer, needs, spec
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.subscriptions.operations import add_reader, edit_reader, remove_reader
from newsletter.subscriptions.operations import reactivate_reader as reactivate


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


class Removal(BaseModel):
    forget: bool = Field(
        False,
        description="the person asked to be erased: keep only a hash of the mailbox, never mail it again",
    )


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
        add_reader, console.store, actor_of(request), body.email, name=body.name, topics=body.topics
    )
    return answer(ReaderOut, reader_out(reader), 201 if created else 200)


@needs("editor")
@spec.validate(resp=Resp(HTTP_200=ReaderOut, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def reactivate_reader(request: Request) -> Response:
    """Make a bounced, unsubscribed or pending reader active again (after checking with them)."""
    console: Console = request.app.state.console
    reader = await _found(console, request.path_params["reader_id"])
    await run_in_threadpool(reactivate, console.store, actor_of(request), reader)
    fresh = await run_in_threadpool(console.store.subscribers.get_subscriber, reader.id)
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
    reader = await _found(console, request.path_params["reader_id"])
    changed = await run_in_threadpool(
        edit_reader,
        console.store,
        actor_of(request),
        reader,
        topics=body.topics,
        cadence=body.cadence,
        paused=body.paused,
    )
    return answer(ReaderOut, reader_out(changed))


@needs("editor")
@spec.validate(query=Removal, resp=Resp(HTTP_200=Done, HTTP_404=ApiError, **ERRORS), tags=["readers"])
async def delete_reader(request: Request) -> Response:
    """Remove a reader and their delivery history (``forget``: erase them, as they asked)."""
    q: Removal = request.context.query  # type: ignore[attr-defined]
    console: Console = request.app.state.console
    reader = await _found(console, request.path_params["reader_id"])
    if not await run_in_threadpool(
        remove_reader, console.store, actor_of(request), reader.email, forget=q.forget
    ):
        raise Refused(404, "no such reader")
    return answer(Done, {"message": "erased" if q.forget else f"{reader.email} removed"})


async def _found(console: Console, reader_id: int) -> Subscriber:
    reader = await run_in_threadpool(console.store.subscribers.get_subscriber, reader_id)
    if reader is None:
        raise Refused(404, "no such reader")
    return reader
