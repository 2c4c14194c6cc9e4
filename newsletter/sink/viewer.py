"""The sink's web viewer and JSON API (Starlette), served by uvicorn in a background thread.

Pages (for people):
    GET  /                          message list, newest first, 50 a page; search across all
                                    messages; updates live (polls the API)
    GET  /messages/{id}             one message: HTML at 600 px and 375 px in sandboxed iframes,
                                    text part, checks, headers, raw source, .eml, delete, one-click
    GET  /messages/{id}/body.html   the HTML part alone (for the iframes; a CSP sandbox, no refresh)
    GET  /messages/{id}.eml         download
    POST /messages/{id}/delete, POST /messages/delete-all   (form buttons; redirect to /)
    GET  /assets/{sink.css,list.js,message.js}

API (JSON):
    GET    /api/messages?q=&to=&from=&subject=&since=ISO&limit=50&offset=0
    GET    /api/messages/{id}            envelope, headers, text, html, checks
    GET    /api/messages/{id}/raw        the bytes as received (message/rfc822)
    DELETE /api/messages, DELETE /api/messages/{id}
    GET    /api/wait?to=&from=&subject=&timeout=10   newest match, waiting for the first one to
                                         arrive if none is stored yet; 408 on timeout
    GET/POST/DELETE /api/faults          list / add (rule JSON, {"spec": "..."} or
                                         {"close_after": N}) / clear
    POST   /api/messages/{id}/one-click  RFC 8058 one-click as a provider does it

The viewer binds to the sink's host and answers only loopback Host names and those allowed
(`guard.HostPolicy`, 421 otherwise). Every POST and DELETE needs the sink's token and a
same-origin request (`guard.same_origin_refusal`, 403 otherwise). Message HTML is shown in
`<iframe sandbox>` and served with a CSP sandbox; everything else is escaped text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.sink.errors import FaultSpecError, ForeignMessageError, MessageGoneError, OneClickError
from newsletter.sink.faults import FaultRule, FaultSet, parse_fault_spec
from newsletter.sink.guard import BODY_CSP, PAGE_CSP, HostPolicy, SecurityHeaders, same_origin_refusal
from newsletter.sink.message import StoredMessage
from newsletter.sink.net import bind_listener
from newsletter.sink.pages import ASSETS, body_document, list_page, message_page, not_found_page
from newsletter.sink.storage import MaildirStore

if TYPE_CHECKING:
    from newsletter.sink.oneclick import OneClickResult

MAX_WAIT_SECONDS = 300.0
MAX_PAGE = 500

Endpoint = Callable[[Request], Awaitable[Response]]


def describe(message: StoredMessage) -> dict[str, Any]:
    """Everything about one message, JSON-ready: envelope, headers, parts and checks."""
    return {
        **message.summary(),
        "headers": [[k, v] for k, v in message.header_items()],
        "text": message.text,
        "html": message.html,
        "checks": [c.to_dict() for c in message.checks],
    }


class ViewedSink(Protocol):
    """What the viewer needs of a sink (`SinkServer` is one; it starts the viewer, so the
    viewer must not import it back)."""

    token: str
    host: str
    allowed_hosts: tuple[str, ...]
    faults: FaultSet

    @property
    def store(self) -> MaildirStore: ...

    def messages(
        self,
        to: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        query: str | None = None,
    ) -> list[StoredMessage]: ...

    def get(self, msg_id: str) -> StoredMessage: ...

    def clear(self) -> int: ...

    def delete(self, msg_id: str) -> bool: ...

    def one_click(self, msg_id: str, *, timeout: float = 10.0) -> OneClickResult: ...


class BadRequest(ValueError):
    """A query or body value the API cannot use; answered with 400 and the message."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    since = None
    if q.get("since"):
        try:
            since = datetime.fromisoformat(q["since"])
        except ValueError as exc:
            raise BadRequest(
                f"since={q['since']!r} is not an ISO 8601 time, e.g. 2024-02-05T08:00:00+00:00"
            ) from exc
    return {
        "to": q.get("to") or None,
        "sender": q.get("from") or None,
        "subject": q.get("subject") or None,
        "since": since,
        "query": q.get("q") or None,
    }


def _int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}={raw!r} must be a whole number") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def build_app(sink: ViewedSink) -> Starlette:
    """The viewer app for `sink` (usable with Starlette's TestClient, no server needed)."""
    token = sink.token

    def lookup(request: Request) -> StoredMessage:
        return sink.get(request.path_params["id"])

    def changes_state(endpoint: Endpoint) -> Endpoint:
        """Refuse (403) unless the request proves it comes from the viewer (see guard)."""

        async def guarded(request: Request) -> Response:
            refusal = await same_origin_refusal(request, token)
            if refusal is not None:
                return _error(403, refusal)
            return await endpoint(request)

        return guarded

    # -- API -----------------------------------------------------------------------------
    async def api_messages(request: Request) -> Response:
        filters = _filters(request)
        limit = _int(request, "limit", 50, low=1, high=MAX_PAGE)
        offset = _int(request, "offset", 0, low=0, high=10**9)

        def listing() -> dict[str, Any]:
            found = sink.messages(**filters)
            return {
                "total": len(found),
                "limit": limit,
                "offset": offset,
                "messages": [m.summary() for m in found[offset : offset + limit]],
            }

        return JSONResponse(await run_in_threadpool(listing))

    @changes_state
    async def api_clear(request: Request) -> Response:
        return JSONResponse({"deleted": sink.clear(), "kept_foreign": sink.store.foreign_count})

    async def api_message(request: Request) -> Response:
        message = lookup(request)
        return JSONResponse(await run_in_threadpool(describe, message))

    @changes_state
    async def api_delete(request: Request) -> Response:
        if not sink.delete(request.path_params["id"]):
            return _error(404, f"no message {request.path_params['id']!r}")
        return Response(status_code=204)

    async def api_raw(request: Request) -> Response:
        message = lookup(request)
        headers = {}
        if request.query_params.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{message.id}.eml"'
        return Response(message.raw, media_type="message/rfc822", headers=headers)

    async def api_wait(request: Request) -> Response:
        filters = _filters(request)
        raw_timeout = request.query_params.get("timeout", "10")
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise BadRequest(f"timeout={raw_timeout!r} must be a number of seconds") from None
        if not 0 <= timeout <= MAX_WAIT_SECONDS:
            raise BadRequest(f"timeout must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake(message: StoredMessage) -> None:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:
                pass  # the viewer loop is shutting down

        unsubscribe = sink.store.subscribe(wake)
        try:
            deadline = loop.time() + timeout
            while True:
                arrived.clear()  # before looking, so an arrival in between is not missed
                found = await run_in_threadpool(sink.messages, **filters)
                if found:
                    return JSONResponse(await run_in_threadpool(describe, found[0]))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _error(408, f"no matching message arrived within {timeout:g}s")
                try:
                    await asyncio.wait_for(arrived.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            unsubscribe()

    async def api_faults(request: Request) -> Response:
        return JSONResponse(sink.faults.to_dict())

    @changes_state
    async def api_add_fault(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('body must be JSON, e.g. {"spec": "data:451:every=2"}') from None
        if not isinstance(body, dict):
            raise BadRequest('body must be a JSON object, e.g. {"stage": "rcpt", "code": 550}')
        try:
            if set(body) == {"close_after"}:
                value = body["close_after"]
                if value is not None and (not isinstance(value, int) or value < 1):
                    raise FaultSpecError("close_after must be a whole number >= 1 or null")
                sink.faults.close_after = value
                return JSONResponse(sink.faults.to_dict(), status_code=201)
            rule = parse_fault_spec(body["spec"]) if set(body) == {"spec"} else FaultRule.from_dict(body)
        except FaultSpecError as exc:
            raise BadRequest(str(exc)) from None
        sink.faults.add(rule)
        return JSONResponse(rule.to_dict(), status_code=201)

    @changes_state
    async def api_clear_faults(request: Request) -> Response:
        sink.faults.clear()
        return JSONResponse(sink.faults.to_dict())

    @changes_state
    async def api_one_click(request: Request) -> Response:
        lookup(request)
        try:
            result = await run_in_threadpool(sink.one_click, request.path_params["id"])
        except OneClickError as exc:
            return _error(403 if exc.refused_target else 400, str(exc))
        return JSONResponse(result.to_dict())

    # -- pages ---------------------------------------------------------------------------
    def html_page(content: str, status_code: int = 200) -> HTMLResponse:
        # Referrer same-origin, not no-referrer: with no-referrer chromium sends `Origin: null` on
        # the viewer's own form POSTs, which the same-origin check must refuse.
        return HTMLResponse(
            content,
            status_code=status_code,
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "same-origin",
            },
        )

    async def page_list(request: Request) -> Response:
        return html_page(list_page(token))

    async def page_message(request: Request) -> Response:
        message = lookup(request)
        deletable = sink.store.is_own(message.id)
        return html_page(
            await run_in_threadpool(lambda: message_page(message, token=token, deletable=deletable))
        )

    async def page_body(request: Request) -> Response:
        message = lookup(request)
        body = await run_in_threadpool(body_document, message)
        return HTMLResponse(
            body, headers={"Content-Security-Policy": BODY_CSP, "X-Frame-Options": "SAMEORIGIN"}
        )

    async def page_eml(request: Request) -> Response:
        message = lookup(request)
        return Response(
            message.raw,
            media_type="message/rfc822",
            headers={"Content-Disposition": f'attachment; filename="{message.id}.eml"'},
        )

    async def asset(request: Request) -> Response:
        found = ASSETS.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("no such asset", status_code=404)
        text, media_type = found
        return Response(text, media_type=media_type, headers={"Cache-Control": "no-cache"})

    @changes_state
    async def page_delete(request: Request) -> Response:
        sink.delete(request.path_params["id"])
        return RedirectResponse("/", status_code=303)

    @changes_state
    async def page_delete_all(request: Request) -> Response:
        sink.clear()
        return RedirectResponse("/", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return _error(404, str(exc))
        return html_page(not_found_page(str(exc), token=token), status_code=404)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    async def foreign(request: Request, exc: Exception) -> Response:
        return _error(409, str(exc))

    routes = [
        Route("/", page_list),
        Route("/assets/{name}", asset),
        Route("/messages/delete-all", page_delete_all, methods=["POST"]),
        Route("/messages/{id}.eml", page_eml),
        Route("/messages/{id}/body.html", page_body),
        Route("/messages/{id}/delete", page_delete, methods=["POST"]),
        Route("/messages/{id}", page_message),
        Route("/api/messages", api_messages, methods=["GET"]),
        Route("/api/messages", api_clear, methods=["DELETE"]),
        Route("/api/messages/{id}/raw", api_raw),
        Route("/api/messages/{id}/one-click", api_one_click, methods=["POST"]),
        Route("/api/messages/{id}", api_message, methods=["GET"]),
        Route("/api/messages/{id}", api_delete, methods=["DELETE"]),
        Route("/api/wait", api_wait),
        Route("/api/faults", api_faults, methods=["GET"]),
        Route("/api/faults", api_add_fault, methods=["POST"]),
        Route("/api/faults", api_clear_faults, methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, policy=HostPolicy(sink.host, sink.allowed_hosts))],
        exception_handlers={
            MessageGoneError: not_found,
            BadRequest: bad_request,
            ForeignMessageError: foreign,
        },
    )


# -- serving ---------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn, telling us when it is ready to accept (it has no event for that)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


class ViewerThread:
    """Serves `build_app(sink)` on host:port (0 = free port) in a daemon thread."""

    def __init__(self, sink: ViewedSink, *, host: str, port: int) -> None:
        self._sock = bind_listener(host, port, what="HTTP")
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(sink),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._ready = threading.Event()
        self._server = _Server(config, self._ready)
        self._thread = threading.Thread(target=self._run, name="sink-viewer", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if not self._server.started:
            raise RuntimeError("the sink viewer failed to start; see the log above")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()


__all__ = ["ViewerThread", "build_app", "describe"]
