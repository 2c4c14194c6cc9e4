"""What every API endpoint shares: the spectree document, the token guard, the audit entry,
errors and paging."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from newsletter.admin.accounts import role_at_least
from newsletter.admin.context import Console, Refused
from newsletter.admin.security import client_of
from newsletter.subscriptions.operations import Actor

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


class Paging(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=200)


class Done(BaseModel):
    ok: bool = True
    message: str = ""


class ApiError(BaseModel):
    error: str
    hint: str = ""


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


def actor_of(request: Request) -> Actor:
    """The token's owner as reader operations name them in the audit log (marked "API")."""
    return Actor(request.state.operator.email, client=client_of(request), via="API")


def answer(model: type[BaseModel], data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_validate(data).model_dump(mode="json"), status_code=status)


ERRORS = {"HTTP_401": ApiError, "HTTP_403": ApiError}
