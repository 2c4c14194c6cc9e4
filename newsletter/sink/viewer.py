"""The sink's web viewer and JSON API (Starlette), served by uvicorn in a background thread.

Pages (for people):
    GET  /                          message list, newest first; search; updates live (polls the API)
    GET  /messages/{id}             one message: HTML at 600 px and 375 px in sandboxed iframes,
                                    text part, checks, headers, raw source, .eml, delete, one-click
    GET  /messages/{id}/body.html   the HTML part alone (for the iframes; CSP forbids scripts)
    GET  /messages/{id}.eml         download
    POST /messages/{id}/delete, POST /messages/delete-all   (form buttons; redirect to /)

API (JSON):
    GET    /api/messages?to=&from=&subject=&since=ISO&limit=50&offset=0
    GET    /api/messages/{id}            envelope, headers, text, html, checks
    GET    /api/messages/{id}/raw        the bytes as received (message/rfc822)
    DELETE /api/messages, DELETE /api/messages/{id}
    GET    /api/wait?to=&from=&subject=&timeout=10   newest match, waiting for the first one to
                                         arrive if none is stored yet; 408 on timeout
    GET/POST/DELETE /api/faults          list / add (rule JSON, {"spec": "..."} or
                                         {"close_after": N}) / clear
    POST   /api/messages/{id}/one-click  RFC 8058 one-click as a provider does it

The viewer binds to the sink's host. Message HTML is only ever shown inside
`<iframe sandbox>` (no scripts, unique origin); everything else is escaped text.
"""

from __future__ import annotations

import asyncio
import html
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.sink.errors import FaultSpecError, MessageGoneError, OneClickError
from newsletter.sink.faults import FaultRule, parse_fault_spec
from newsletter.sink.message import StoredMessage
from newsletter.sink.net import bind_listener

if TYPE_CHECKING:
    from newsletter.sink.server import SinkServer

MAX_WAIT_SECONDS = 300.0
MAX_PAGE = 500


def describe(message: StoredMessage) -> dict[str, Any]:
    """Everything about one message, JSON-ready: envelope, headers, parts and checks."""
    return {
        **message.summary(),
        "headers": [[k, v] for k, v in message.header_items()],
        "text": message.text,
        "html": message.html,
        "checks": [c.to_dict() for c in message.checks],
    }


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
            raise BadRequest(f"since={q['since']!r} is not an ISO 8601 time, e.g. 2024-02-05T08:00:00+00:00") from exc
    return {"to": q.get("to") or None, "sender": q.get("from") or None,
            "subject": q.get("subject") or None, "since": since}


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


def build_app(sink: SinkServer) -> Starlette:
    """The viewer app for `sink` (usable with Starlette's TestClient, no server needed)."""

    def lookup(request: Request) -> StoredMessage:
        return sink.get(request.path_params["id"])

    # -- API -----------------------------------------------------------------------------
    async def api_messages(request: Request) -> Response:
        filters = _filters(request)
        limit = _int(request, "limit", 50, low=1, high=MAX_PAGE)
        offset = _int(request, "offset", 0, low=0, high=10**9)
        found = sink.messages(**filters)
        return JSONResponse({
            "total": len(found), "limit": limit, "offset": offset,
            "messages": [m.summary() for m in found[offset:offset + limit]],
        })

    async def api_clear(request: Request) -> Response:
        return JSONResponse({"deleted": sink.clear()})

    async def api_message(request: Request) -> Response:
        message = lookup(request)
        return JSONResponse(await run_in_threadpool(describe, message))

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
                found = sink.messages(**filters)
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

    async def api_clear_faults(request: Request) -> Response:
        sink.faults.clear()
        return JSONResponse(sink.faults.to_dict())

    async def api_one_click(request: Request) -> Response:
        lookup(request)
        try:
            result = await run_in_threadpool(sink.one_click, request.path_params["id"])
        except OneClickError as exc:
            return _error(403 if "not a loopback host" in str(exc) else 400, str(exc))
        return JSONResponse(result.to_dict())

    # -- pages ---------------------------------------------------------------------------
    async def page_list(request: Request) -> Response:
        return HTMLResponse(LIST_PAGE)

    async def page_message(request: Request) -> Response:
        message = lookup(request)
        return HTMLResponse(await run_in_threadpool(render_message_page, message))

    async def page_body(request: Request) -> Response:
        message = lookup(request)
        body = message.html if message.html is not None else f"<pre>{html.escape(message.text or '')}</pre>"
        return HTMLResponse(body, headers={
            # Belt and braces with the iframe sandbox: no scripts, no plugins, no forms.
            "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline' *; font-src *",
        })

    async def page_eml(request: Request) -> Response:
        message = lookup(request)
        return Response(message.raw, media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{message.id}.eml"'})

    async def page_delete(request: Request) -> Response:
        sink.delete(request.path_params["id"])
        return RedirectResponse("/", status_code=303)

    async def page_delete_all(request: Request) -> Response:
        sink.clear()
        return RedirectResponse("/", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return _error(404, str(exc))
        return HTMLResponse(_page("Not found", f"<p>{html.escape(str(exc))}</p><p><a href='/'>All messages</a></p>"),
                            status_code=404)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    routes = [
        Route("/", page_list),
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
    return Starlette(routes=routes, exception_handlers={MessageGoneError: not_found, BadRequest: bad_request})


# -- HTML ------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2d3d;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:12px 16px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e3e3;vertical-align:top}
tr.row:hover{background:#f4f8fc;cursor:pointer}
form.inline{display:inline}
pre{background:#f6f6f6;padding:8px;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:480px}
.frames{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.frames iframe{border:1px solid #ccc;height:640px;background:#fff}
.pass{color:#17692b}.warn{color:#8a5b00}.fail{color:#b0191e}
.status{font-weight:700;text-transform:uppercase;font-size:12px}
input{padding:3px 6px}
"""


def _page(title: str, body: str, script: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} - newsletter sink</title><style>{_STYLE}</style></head><body>"
        "<header><a href='/'>newsletter sink</a><span>all mail stays here</span></header>"
        f"<main>{body}</main>{script}</body></html>"
    )


LIST_PAGE = _page(
    "Messages",
    """
<form id="search" onsubmit="return false">
  <input name="to" placeholder="to" aria-label="to">
  <input name="from" placeholder="from" aria-label="from">
  <input name="subject" placeholder="subject" aria-label="subject">
  <span id="count"></span>
</form>
<form class="inline" method="post" action="/messages/delete-all"
      onsubmit="return confirm('Delete all messages?')"><button id="delete-all">Delete all</button></form>
<table id="messages"><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th><th>Size</th></tr></thead>
<tbody></tbody></table>
""",
    """
<script>
// Live list: re-fetch the API every second and redraw when anything changed.
const tbody = document.querySelector('#messages tbody');
const form = document.getElementById('search');
let last = '';
async function refresh() {
  const q = new URLSearchParams();
  for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
  q.set('limit', '200');
  try {
    const res = await fetch('/api/messages?' + q);
    const data = await res.json();
    const key = JSON.stringify(data);
    if (key !== last) { last = key; draw(data); }
  } catch (e) { /* the sink restarted; try again next tick */ }
}
function cell(tr, text) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); }
function draw(data) {
  tbody.replaceChildren();
  document.getElementById('count').textContent = data.total + ' message(s)';
  for (const m of data.messages) {
    const tr = document.createElement('tr');
    tr.className = 'row'; tr.dataset.id = m.id;
    cell(tr, new Date(m.received_at).toLocaleString());
    cell(tr, m.from || m.mail_from);
    cell(tr, m.rcpt_tos.join(', '));
    const td = document.createElement('td'); const a = document.createElement('a');
    a.href = '/messages/' + encodeURIComponent(m.id); a.textContent = m.subject || '(no subject)';
    td.appendChild(a); tr.appendChild(td);
    cell(tr, (m.size / 1024).toFixed(1) + ' KB');
    tr.onclick = (ev) => { if (ev.target.tagName !== 'A') location.href = a.href; };
    tbody.appendChild(tr);
  }
}
form.addEventListener('input', refresh);
refresh();
setInterval(refresh, 1000);
</script>
""",
)


def render_message_page(message: StoredMessage) -> str:
    e = html.escape
    mid = e(message.id)
    checks = "".join(
        f"<tr class='check {e(c.status)}' data-check='{e(c.name)}'><td class='status'>{e(c.status)}</td>"
        f"<td>{e(c.name)}</td><td>{e(c.reason)}</td></tr>"
        for c in message.checks
    )
    headers = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in message.header_items())
    if message.html is not None:
        frames = "".join(
            f"<figure><figcaption>{w} px</figcaption><iframe sandbox='' title='HTML at {w} px' "
            f"width='{w}' src='/messages/{mid}/body.html' referrerpolicy='no-referrer'></iframe></figure>"
            for w in (600, 375)
        )
    else:
        frames = "<p>No HTML part.</p>"
    text = f"<pre id='text-part'>{e(message.text)}</pre>" if message.text is not None else "<p>No text part.</p>"
    raw = message.raw.decode("utf-8", "replace")
    body = f"""
<h1 id="subject">{e(message.subject or '(no subject)')}</h1>
<p>From <b>{e(message.from_ or message.mail_from)}</b> to {e(', '.join(message.rcpt_tos))}
 &middot; envelope {e(message.mail_from or '<>')} &middot; {e(message.received_at.isoformat())} &middot; {message.size} bytes</p>
<p>
 <a href="/messages/{mid}.eml" download>Download .eml</a> &middot;
 <a href="/api/messages/{mid}">JSON</a> &middot;
 <button id="one-click" type="button">One-click unsubscribe (as Gmail)</button>
 <form class="inline" method="post" action="/messages/{mid}/delete"><button id="delete">Delete</button></form>
</p>
<pre id="one-click-result" hidden></pre>
<h2>Checks</h2>
<table id="checks">{checks}</table>
<h2>HTML</h2>
<div class="frames">{frames}</div>
<h2>Text</h2>
{text}
<h2>Headers</h2>
<table id="headers">{headers}</table>
<h2>Raw source</h2>
<pre id="raw">{e(raw)}</pre>
"""
    script = f"""
<script>
document.getElementById('one-click').onclick = async () => {{
  const out = document.getElementById('one-click-result');
  out.hidden = false; out.textContent = 'POSTing...';
  const res = await fetch('/api/messages/{mid}/one-click', {{method: 'POST'}});
  out.textContent = JSON.stringify(await res.json(), null, 2);
}};
</script>
"""
    return _page(message.subject or "(no subject)", body, script)


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

    def __init__(self, sink: SinkServer, *, host: str, port: int) -> None:
        self._sock = bind_listener(host, port, what="HTTP")
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(sink), log_level="warning", lifespan="off", access_log=False,
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
