"""What every console handler shares: the context, the sign-in and form guards, refusals.

Contract (kept by the guards here and checked in tests/admin):
- Off (every path 404) until at least one user exists.
- Every page needs a live session, every API call a live token; a GET without one
  goes to the login page, anything else is 401.
- Every POST needs the same origin (``security.same_origin``) and the session's CSRF
  token; the login form has its own double-submit token.
- Roles: viewer reads; editor also previews, test-sends, sends, pauses and edits
  readers; admin also sees users and the audit log.
- Every operator action is written to the audit log: who, what, when, from where.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.admin.accounts import Accounts, SignedIn, role_at_least
from newsletter.admin.engine import ConsoleEngine
from newsletter.admin.import_jobs import ImportJobs
from newsletter.admin.importing import MAX_IMPORT_BYTES, Uploads, UploadTooLarge
from newsletter.admin.security import AttemptLimiter, client_of, same_origin
from newsletter.config import DEFAULT_TEMPLATES
from newsletter.service import Service

log = logging.getLogger("newsletter.admin")
SESSION_COOKIE = "nl_console"
SECURE_SESSION_COOKIE = "__Host-nl_console"  # __Host-: Secure, Path=/, no Domain, enforced by browsers
LOGIN_COOKIE = "nl_console_login"
MAX_FORM = 64 * 1024
MAX_UPLOAD = MAX_IMPORT_BYTES  # an import's file, streamed to disk


class Refused(Exception):
    """A request the console refuses: shown as a page (or JSON under /api) with this status."""

    def __init__(self, status: int, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


class NeedsLogin(Exception):
    """A page asked for without a live session: go to the login page."""


class Console:
    """What every handler shares: the service, accounts, engine, templates and guards."""

    def __init__(self, service: Service, *, dev: bool) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.dev = dev
        self.accounts = Accounts(
            service.store.accounts, idle=timedelta(seconds=self.settings.admin.session_idle)
        )
        self.engine = ConsoleEngine(service)
        self.uploads = Uploads()  # files between the import's mapping preview and the import
        self.imports = ImportJobs(service.store)  # imports running in the background, and the last ones
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(DEFAULT_TEMPLATES)),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.login_limiter = AttemptLimiter(10, 600)  # per client address
        self._enabled = False
        self.cookie_name = SESSION_COOKIE if dev else SECURE_SESSION_COOKIE

    # -- on/off -------------------------------------------------------------------------

    def enabled(self) -> bool:
        if not self._enabled:
            self._enabled = self.store.accounts.count_users() > 0  # once on, on for the process
        return self._enabled

    # -- rendering ---------------------------------------------------------------------------

    def page(
        self, request: Request, name: str, *, signed: SignedIn | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(f"admin/{name}").render(
            site=self.settings.site,
            dev=self.dev,
            me=signed.operator if signed else None,
            csrf=signed.session.csrf_token if signed else "",
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    # -- guards -----------------------------------------------------------------------------

    async def signed_in(self, request: Request, role: str = "viewer") -> SignedIn:
        """The request's session with at least ``role``; NeedsLogin (GET) / Refused otherwise."""
        signed = await run_in_threadpool(self.accounts.session_for, request.cookies.get(self.cookie_name))
        if signed is None:
            if request.method in ("GET", "HEAD"):
                raise NeedsLogin()
            raise Refused(401, "you are not signed in (or your session ended)", hint="Sign in again.")
        if not role_at_least(signed.operator.role, role):
            raise Refused(
                403, f"this needs the {role} role; you are {signed.operator.role}", hint="Ask an admin."
            )
        return signed

    async def posted(self, request: Request, role: str, *, upload: bool = False) -> tuple[SignedIn, FormData]:
        """A state-changing form post: same origin, signed in with ``role``, the session's CSRF token."""
        if not same_origin(request):
            raise Refused(403, "cross-site request refused", hint="Use the console's own forms.")
        signed = await self.signed_in(request, role)
        form = await read_form(request, upload=upload)
        token = form.get("csrf")
        if not isinstance(token, str) or not _equal(token, signed.session.csrf_token):
            raise Refused(
                403, "the form's security token is missing or stale", hint="Reload the page and try again."
            )
        return signed, form

    def audit(self, request: Request, actor: str, action: str, target: str = "", detail: str = "") -> None:
        self.store.accounts.audit(
            actor=actor, action=action, target=target, detail=detail, client=client_of(request)
        )


async def read_form(request: Request, *, upload: bool = False) -> FormData:
    if upload:
        return await read_upload_form(request)
    limit = MAX_FORM
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "the form is too large")
    request._body = bytes(body)  # Starlette's form parser reads the cached body
    try:
        return await request.form(max_files=1 if upload else 0, max_fields=200)
    except Exception as exc:  # python-multipart raises several kinds for garbage
        raise Refused(400, "the form could not be read") from exc


async def read_upload_form(request: Request) -> FormData:
    """A form with one file, parsed as it streams in: the file spools to disk in Starlette's parser
    (never whole in memory), the other fields stay small, and the body stops at MAX_UPLOAD."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_UPLOAD):
        raise Refused(413, UploadTooLarge().message, hint=UploadTooLarge().hint)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Refused(400, "the form could not be read", hint="Upload the file with the console's form.")

    async def capped() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > MAX_UPLOAD:
                raise Refused(413, UploadTooLarge().message, hint=UploadTooLarge().hint)
            yield chunk

    parser = MultiPartParser(request.headers, capped(), max_files=1, max_fields=200, max_part_size=MAX_FORM)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise Refused(400, "the form could not be read") from exc


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
