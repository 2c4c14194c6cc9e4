"""The viewer's HTML, stylesheet and scripts.

Everything a page runs is a same-origin file under /assets/ (the pages' CSP forbids inline
script and style); the per-run token reaches the scripts through <meta name="sink-token">
and the no-JS forms through a hidden field. Pages are built for axe-core: a language, banner
and main landmarks, one h1, labelled controls, focusable scrolling regions.
"""

from __future__ import annotations

import html
import re

from newsletter.sink.guard import TOKEN_FIELD
from newsletter.sink.message import StoredMessage

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2d3d;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:12px 16px}
h1{font-size:20px;margin:8px 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e3e3;vertical-align:top}
tr.row:hover{background:#f4f8fc;cursor:pointer}
form.inline{display:inline}
pre{background:#f6f6f6;padding:8px;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:480px}
pre:focus{outline:2px solid #1f5fa8}
.frames{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.frames iframe{border:1px solid #ccc;height:640px;background:#fff}
.pass{color:#17692b}.warn{color:#7a5000}.fail{color:#b0191e}
.status{font-weight:700;text-transform:uppercase;font-size:12px}
.toolbar{display:flex;gap:12px;align-items:flex-end;flex-wrap:wrap;margin-bottom:8px}
.toolbar label{display:flex;flex-direction:column;font-size:12px}
input{padding:3px 6px}
"""

LIST_JS = """
// Live list: re-fetch the current page of the API every second; redraw when anything changed.
const tbody = document.querySelector('#messages tbody');
const form = document.getElementById('search');
const older = document.getElementById('older');
const newer = document.getElementById('newer');
const LIMIT = 50;
let offset = 0;
let last = '';
async function refresh() {
  const q = new URLSearchParams();
  for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
  q.set('limit', String(LIMIT));
  q.set('offset', String(offset));
  try {
    const res = await fetch('/api/messages?' + q);
    const data = await res.json();
    if (data.total > 0 && offset >= data.total) { offset = Math.max(0, offset - LIMIT); return refresh(); }
    const key = JSON.stringify(data);
    if (key !== last) { last = key; draw(data); }
  } catch (e) { /* the sink restarted; try again next tick */ }
}
function cell(tr, text) { const td = document.createElement('td'); \
td.textContent = text; tr.appendChild(td); }
function draw(data) {
  tbody.replaceChildren();
  document.getElementById('count').textContent = data.total + ' message(s)';
  const first = data.total ? data.offset + 1 : 0;
  document.getElementById('page-info').textContent =
    first + '\\u2013' + (data.offset + data.messages.length) + ' of ' + data.total;
  older.disabled = data.offset + data.messages.length >= data.total;
  newer.disabled = data.offset === 0;
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
form.addEventListener('input', () => { offset = 0; refresh(); });
form.addEventListener('submit', (ev) => { ev.preventDefault(); offset = 0; refresh(); });
older.addEventListener('click', () => { offset += LIMIT; refresh(); });
newer.addEventListener('click', () => { offset = Math.max(0, offset - LIMIT); refresh(); });
document.getElementById('delete-all-form').addEventListener('submit', (ev) => {
  if (!confirm('Delete all messages the sink stored?')) ev.preventDefault();
});
refresh();
setInterval(refresh, 1000);
"""

MESSAGE_JS = """
const token = document.querySelector('meta[name="sink-token"]').content;
const button = document.getElementById('one-click');
button.addEventListener('click', async () => {
  const out = document.getElementById('one-click-result');
  out.hidden = false; out.textContent = 'POSTing...';
  const res = await fetch(button.dataset.url, {method: 'POST', headers: {'X-Sink-Token': token}});
  out.textContent = JSON.stringify(await res.json(), null, 2);
});
"""

ASSETS: dict[str, tuple[str, str]] = {
    "sink.css": (CSS, "text/css"),
    "list.js": (LIST_JS, "text/javascript"),
    "message.js": (MESSAGE_JS, "text/javascript"),
}


def page(title: str, body: str, *, token: str, script: str | None = None) -> str:
    """A whole viewer page: banner, main, the token for scripts, `script` from /assets/."""
    tag = f"<script src='/assets/{script}' defer></script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='sink-token' content='{html.escape(token)}'>"
        f"<title>{html.escape(title)} - newsletter sink</title>"
        f"<link rel='stylesheet' href='/assets/sink.css'>{tag}</head><body>"
        "<header><a href='/'>newsletter sink</a><span>all mail stays here</span></header>"
        f"<main>{body}</main></body></html>"
    )


def token_field(token: str) -> str:
    return f"<input type='hidden' name='{TOKEN_FIELD}' value='{html.escape(token)}'>"


def list_page(token: str) -> str:
    body = f"""
<h1>Messages</h1>
<form id="search" role="search" class="toolbar">
  <label>Search <input name="q" type="search"></label>
  <label>To <input name="to"></label>
  <label>From <input name="from"></label>
  <label>Subject <input name="subject"></label>
  <span id="count" role="status"></span>
</form>
<nav aria-label="Pages" class="toolbar">
  <button id="newer" type="button" disabled>Newer</button>
  <span id="page-info"></span>
  <button id="older" type="button" disabled>Older</button>
  <form id="delete-all-form" class="inline" method="post" action="/messages/delete-all">{token_field(token)}
    <button id="delete-all">Delete all</button></form>
</nav>
<table id="messages"><caption class="status">Newest first</caption>
<thead><tr><th scope="col">Received</th><th scope="col">From</th><th scope="col">To</th>
<th scope="col">Subject</th><th scope="col">Size</th></tr></thead>
<tbody></tbody></table>
"""
    return page("Messages", body, token=token, script="list.js")


def message_page(message: StoredMessage, *, token: str, deletable: bool) -> str:
    e = html.escape
    mid = e(message.id)
    checks = "".join(
        f"<tr class='check {e(c.status)}' data-check='{e(c.name)}'><td class='status'>{e(c.status)}</td>"
        f"<td>{e(c.name)}</td><td>{e(c.reason)}</td></tr>"
        for c in message.checks
    )
    headers = "".join(
        f"<tr><th scope='row'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in message.header_items()
    )
    if message.html is not None:
        frames = "".join(
            f"<figure><figcaption>{w} px</figcaption><iframe sandbox='' title='HTML at {w} px' "
            f"width='{w}' src='/messages/{mid}/body.html' referrerpolicy='no-referrer'></iframe></figure>"
            for w in (600, 375)
        )
    else:
        frames = "<p>No HTML part.</p>"
    text = (
        f"<pre id='text-part' tabindex='0' aria-label='Text part'>{e(message.text)}</pre>"
        if message.text is not None
        else "<p>No text part.</p>"
    )
    raw = message.raw.decode("utf-8", "replace")
    delete = (
        f"<form class='inline' method='post' action='/messages/{mid}/delete'>{token_field(token)}"
        "<button id='delete'>Delete</button></form>"
        if deletable
        else "<span id='foreign'>(in the Maildir before the sink: never deleted by it)</span>"
    )
    body = f"""
<h1 id="subject">{e(message.subject or "(no subject)")}</h1>
<p>From <b>{e(message.from_ or message.mail_from)}</b> to {e(", ".join(message.rcpt_tos))}
 &middot; envelope {e(message.mail_from or "<>")} &middot; {e(message.received_at.isoformat())} \
&middot; {message.size} bytes</p>
<p>
 <a href="/messages/{mid}.eml" download>Download .eml</a> &middot;
 <a href="/api/messages/{mid}">JSON</a> &middot;
 <button id="one-click" type="button" data-url="/api/messages/{mid}/one-click">\
One-click unsubscribe (as Gmail)</button>
 {delete}
</p>
<pre id="one-click-result" tabindex="0" aria-label="One-click result" aria-live="polite" hidden></pre>
<h2>Checks</h2>
<table id="checks"><thead><tr><th scope="col">Status</th><th scope="col">Check</th>\
<th scope="col">Reason</th></tr></thead>
<tbody>{checks}</tbody></table>
<h2>HTML</h2>
<div class="frames">{frames}</div>
<h2>Text</h2>
{text}
<h2>Headers</h2>
<table id="headers">{headers}</table>
<h2>Raw source</h2>
<pre id="raw" tabindex="0" aria-label="Raw source">{e(raw)}</pre>
"""
    return page(message.subject or "(no subject)", body, token=token, script="message.js")


def not_found_page(reason: str, *, token: str) -> str:
    return page(
        "Not found",
        f"<h1>Not found</h1><p>{html.escape(reason)}</p><p><a href='/'>All messages</a></p>",
        token=token,
    )


_META_REFRESH = re.compile(r"""(<meta\b[^>]*?\bhttp-equiv\s*=\s*["']?)\s*refresh""", re.IGNORECASE)


def body_document(message: StoredMessage) -> str:
    """The message's HTML part (or its text, escaped) as served to the iframes.

    A meta refresh is renamed so it does nothing (a sandbox does not stop one); the CSP
    sandbox the route adds stops scripts and forms.
    """
    if message.html is None:
        return f"<pre>{html.escape(message.text or '')}</pre>"
    return _META_REFRESH.sub(r"\1x-sink-removed-refresh", message.html)
