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

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.admin.context import Console
from newsletter.admin.endpoints.base import DOCS_PATH, Endpoint, needs, spec
from newsletter.admin.endpoints.editions import (
    audience,
    get_edition,
    list_editions,
    pause_edition,
    preview,
    resume_edition,
    send_now,
    test_send,
)
from newsletter.admin.endpoints.imports import import_job, import_readers
from newsletter.admin.endpoints.readers import (
    change_reader,
    create_reader,
    delete_reader,
    get_reader,
    list_readers,
    reactivate_reader,
)


def token_or_session(func: Endpoint) -> Endpoint:
    """For the document and its docs page (GETs, which change nothing): a token,
    or a console session in a browser."""
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
        Route("/api/v1/import/{job_id}", import_job, methods=["GET"]),
        Route("/api/v1/preview", preview, methods=["GET"]),
        Route("/api/v1/test-send", test_send, methods=["POST"]),
        Route("/api/v1/send/audience", audience, methods=["GET"]),
        Route("/api/v1/send", send_now, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/v1/docs", docs, methods=["GET"]),
    ]


def register_api(app: Starlette) -> None:
    """Let spectree read the app's routes for the document
    (its own unauthenticated doc routes are not added)."""
    spec.app = app
