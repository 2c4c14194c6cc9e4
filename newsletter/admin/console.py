"""The console's pages: login, dashboard, editions, readers, preview and test send, send now, tokens, audit.

Every handler starts with a guard from ``Console`` (``signed_in`` for pages,
``posted`` for forms) and every POST ends in an audit entry and a 303 redirect.
Blocking work runs in Starlette's thread pool.
"""

from __future__ import annotations

import io
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.admin.accounts import ROLES, LoginRefused
from newsletter.admin.context import LOGIN_COOKIE, Console, Refused, read_form
from newsletter.admin.engine import MANUAL
from newsletter.admin.importing import FORMATS, mapping_from, run_import
from newsletter.admin.importing import preview as preview_import
from newsletter.admin.security import client_of, same_origin
from newsletter.config import SECRET_KEYS, describe_keys
from newsletter.content.render import web_version
from newsletter.errors import NewsletterError
from newsletter.models import Cadence, DeliveryState, EditionStatus, SubscriberStatus
from newsletter.subscriptions import add_subscriber, export_csv, parse_topics
from newsletter.subscriptions.formats import FIELDS

PAGE_SIZE = 50
ACTIVE = (EditionStatus.PLANNED, EditionStatus.SENDING)


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(1, int(raw)) if raw.isdigit() and len(raw) < 7 else 1


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class Pages:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.store = console.store

    # -- login --------------------------------------------------------------------------

    async def login_form(
        self, request: Request, *, status: int = 200, error: str = "", email: str = ""
    ) -> Response:
        import secrets

        token = secrets.token_urlsafe(24)
        response = self.c.page(
            request,
            "login.html",
            signed=None,
            status=status,
            title="Sign in",
            login_token=token,
            error=error,
            email=email,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            path="/admin/login",
            httponly=True,
            samesite="strict",
            secure=not self.c.dev,
        )
        return response

    async def login(self, request: Request) -> Response:
        if request.method != "POST":
            return await self.login_form(request)
        if not same_origin(request):
            raise Refused(403, "cross-site request refused", hint="Use the console's own sign-in form.")
        client = client_of(request)
        wait = self.c.login_limiter.hit(client)
        if wait:
            await run_in_threadpool(self.c.audit, request, "-", "login.limited")
            raise Refused(
                429,
                f"too many sign-in attempts from your address; try again in {int(wait // 60) + 1} minutes",
            )
        form = await read_form(request)
        token, cookie = str(form.get("login_token") or ""), request.cookies.get(LOGIN_COOKIE, "")
        if not token or token != cookie:
            raise Refused(
                403, "the sign-in form's security token is missing or stale", hint="Reload the sign-in page."
            )
        email, password = str(form.get("email") or "")[:320], str(form.get("password") or "")
        try:
            user = await run_in_threadpool(self.c.accounts.authenticate, email, password)
        except LoginRefused as exc:
            await run_in_threadpool(self.c.audit, request, email or "-", "login.failed", detail=exc.message)
            message = exc.message + (f" {exc.hint}" if exc.hint else "")
            return await self.login_form(
                request, status=401, error=message[:1].upper() + message[1:], email=email
            )
        cookie_value, _signed = await run_in_threadpool(
            self.c.accounts.start_session,
            user,
            client=client,
            previous=request.cookies.get(self.c.cookie_name),
        )
        await run_in_threadpool(self.c.audit, request, user.email, "login")
        response = see_other("/admin/")
        response.set_cookie(
            self.c.cookie_name,
            cookie_value,
            path="/",
            httponly=True,
            samesite="strict",
            secure=not self.c.dev,
        )
        response.delete_cookie(LOGIN_COOKIE, path="/admin/login")
        return response

    async def logout(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "viewer")
        await run_in_threadpool(self.c.accounts.end_session, request.cookies.get(self.c.cookie_name))
        await run_in_threadpool(self.c.audit, request, signed.operator.email, "logout")
        response = see_other("/admin/login")
        response.delete_cookie(
            self.c.cookie_name, path="/", secure=not self.c.dev, httponly=True, samesite="strict"
        )
        return response

    # -- dashboard -----------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        signed = await self.c.signed_in(request)

        def gather() -> dict[str, Any]:
            editions = self.store.editions.list_editions(limit=10)
            top = editions[0] if editions else None
            return {
                "upcoming": self.c.engine.upcoming(3),
                "editions": editions,
                "replies": self.store.outbox.failure_replies(top.id) if top else [],
                "blocked": self.store.console.blocked_by_domain(top.id) if top else [],
                "top": top,
                "totals": self.store.console.status_totals(),
                "growth": self.store.console.weekly_growth(weeks=8),
            }

        data = await run_in_threadpool(gather)
        peak = max([1] + [max(w.signups, w.confirmations, w.unsubscribes, w.bounces) for w in data["growth"]])
        return self.c.page(
            request,
            "dashboard.html",
            signed=signed,
            title="Dashboard",
            peak=peak,
            states=[s.value for s in DeliveryState],
            **data,
        )

    async def progress(self, request: Request) -> Response:
        """JSON for the pages' polling: status and counts of the editions asked for (or the recent ones)."""
        await self.c.signed_in(request)
        wanted = [int(x) for x in request.query_params.getlist("id") if x.isdigit()][:20]

        def read() -> list[dict[str, Any]]:
            editions = (
                [e for e in (self.store.editions.get_edition(i) for i in wanted) if e]
                if wanted
                else self.store.editions.list_editions(limit=10)
            )
            return [
                {
                    "id": e.id,
                    "key": e.key,
                    "status": e.status.value,
                    "reason": e.reason,
                    "counts": e.counts,
                    "total": sum(e.counts.values()),
                    "done": sum(n for s, n in e.counts.items() if s not in ("pending", "sending")),
                }
                for e in editions
            ]

        return JSONResponse({"editions": await run_in_threadpool(read)})

    # -- editions ----------------------------------------------------------------------------------

    async def editions(self, request: Request) -> Response:
        signed = await self.c.signed_in(request)
        editions = await run_in_threadpool(self.store.editions.list_editions, limit=100)
        return self.c.page(request, "editions.html", signed=signed, title="Editions", editions=editions)

    async def edition(self, request: Request) -> Response:
        signed = await self.c.signed_in(request)
        edition_id = request.path_params["edition_id"]
        state = request.query_params.get("state") or None
        if state is not None and state not in {s.value for s in DeliveryState}:
            state = None
        page = page_number(request)

        def gather() -> dict[str, Any]:
            edition = self.c.engine.edition(edition_id)
            rows, total = self.store.console.edition_rows(
                edition_id, state=state, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
            )
            return {
                "edition": edition,
                "variants": self.store.editions.list_variants(edition_id),
                "rows": rows,
                "pages": max(1, math.ceil(total / PAGE_SIZE)),
                "replies": self.store.outbox.failure_replies(edition_id),
                "blocked": self.store.console.blocked_by_domain(edition_id),
            }

        data = await run_in_threadpool(gather)
        archive = self.c.settings.site.base_url.rstrip("/") + "/archive"
        return self.c.page(
            request,
            "edition.html",
            signed=signed,
            title=f"Edition {data['edition'].key}",
            state=state,
            page=page,
            states=[s.value for s in DeliveryState],
            archive=archive,
            active=data["edition"].status in ACTIVE,
            **data,
        )

    async def variant(self, request: Request) -> Response:
        """One variant's page (the Variant row's own page, framing the digest as the reader saw it)."""
        signed = await self.c.signed_in(request)
        edition_id, variant_id = request.path_params["edition_id"], request.path_params["variant_id"]
        variants = await run_in_threadpool(self.store.editions.list_variants, edition_id)
        variant = next((v for v in variants if v.id == variant_id), None)
        if variant is None:
            raise Refused(404, f"edition #{edition_id} has no variant #{variant_id}")
        return self.c.page(
            request,
            "variant.html",
            signed=signed,
            title=variant.subject or f"Variant {variant_id}",
            variant=variant,
            edition_id=edition_id,
        )

    async def variant_frame(self, request: Request) -> Response:
        await self.c.signed_in(request)
        edition_id, variant_id = request.path_params["edition_id"], request.path_params["variant_id"]
        variants = await run_in_threadpool(self.store.editions.list_variants, edition_id)
        variant = next((v for v in variants if v.id == variant_id), None)
        if variant is None:
            raise Refused(404, "no such variant")
        # The reader's personal links are not kept; the web copy shows the digest itself.
        return HTMLResponse(
            web_version(variant.html, manage_url=self.c.settings.site.base_url.rstrip("/") + "/manage")
        )

    async def pause(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "editor")
        edition_id = request.path_params["edition_id"]
        edition = await run_in_threadpool(self.c.engine.pause, edition_id, by=signed.operator.email)
        await run_in_threadpool(self.c.audit, request, signed.operator.email, "edition.pause", edition.key)
        return see_other(f"/admin/editions/{edition_id}")

    async def resume(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "editor")
        edition_id = request.path_params["edition_id"]
        edition = await run_in_threadpool(self.c.engine.resume, edition_id)
        await run_in_threadpool(self.c.audit, request, signed.operator.email, "edition.resume", edition.key)
        return see_other(f"/admin/editions/{edition_id}")

    # -- send now -------------------------------------------------------------------------------------

    async def send_form(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "editor")
        schedule = request.query_params.get("schedule")
        schedules = [s.name for s in await run_in_threadpool(self.c.engine.schedules)] + [MANUAL]
        audience = None
        if schedule in schedules:
            audience = await run_in_threadpool(self.c.engine.audience, schedule)
        return self.c.page(
            request,
            "send.html",
            signed=signed,
            title="Send now",
            schedules=schedules,
            schedule=schedule if audience is not None else None,
            audience=audience,
        )

    async def send(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        schedule = str(form.get("schedule") or "")
        confirmed = str(form.get("confirm_count") or "")
        audience = await run_in_threadpool(self.c.engine.audience, schedule)
        if confirmed != str(audience):
            # The list changed since the confirmation was shown, or it was never shown: ask again.
            raise Refused(
                409,
                f"the confirmation was for {confirmed or 'no'} readers but {audience} would get this edition now",
                hint="Confirm again.",
            )
        if audience == 0:
            raise Refused(409, "no reader has anything new; nothing to send")
        edition = await run_in_threadpool(self.c.engine.start_send, schedule)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "edition.send", edition.key, f"{audience} readers"
        )
        return see_other(f"/admin/editions/{edition.id}")

    # -- readers -------------------------------------------------------------------------------------

    async def readers(self, request: Request) -> Response:
        signed = await self.c.signed_in(request)
        query = request.query_params.get("q", "")[:320].strip()
        wanted = request.query_params.get("status") or None
        chosen = wanted if wanted in {s.value for s in SubscriberStatus} else None
        page = page_number(request)
        found, total = await run_in_threadpool(
            self.store.console.search_subscribers,
            query=query,
            status=chosen,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        return self.c.page(
            request,
            "readers.html",
            signed=signed,
            title="Readers",
            readers=found,
            total=total,
            q=query,
            status_filter=chosen,
            page=page,
            pages=max(1, math.ceil(total / PAGE_SIZE)),
            statuses=[s.value for s in SubscriberStatus],
        )

    async def reader(self, request: Request) -> Response:
        signed = await self.c.signed_in(request)
        reader_id = request.path_params["reader_id"]

        def gather() -> dict[str, Any]:
            reader = self.store.subscribers.get_subscriber(reader_id)
            if reader is None:
                raise Refused(
                    404,
                    f"no reader #{reader_id}",
                    hint="They may have been removed; the audit log says by whom.",
                )
            return {
                "reader": reader,
                "deliveries": self.store.console.subscriber_rows(reader_id),
                "bounces": self.store.console.subscriber_bounces(reader_id),
                "trail": self.store.accounts.audit_entries(target=reader.email, limit=20),
            }

        data = await run_in_threadpool(gather)
        return self.c.page(request, "reader.html", signed=signed, title=data["reader"].email, **data)

    async def add_reader(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        reader, created = await run_in_threadpool(
            add_subscriber,
            self.store,
            str(form.get("email") or ""),
            name=str(form.get("name") or ""),
            topics=str(form.get("topics") or ""),
        )
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "reader.add" if created else "reader.add-existing",
            reader.email,
        )
        return see_other(f"/admin/readers/{reader.id}")

    async def reactivate(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        await run_in_threadpool(
            self.store.subscribers.set_status,
            reader.id,
            SubscriberStatus.ACTIVE,
            reason=f"reactivated by {signed.operator.email}",
        )
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "reader.reactivate",
            reader.email,
            f"was {reader.status.value}",
        )
        return see_other(f"/admin/readers/{reader.id}")

    async def remove(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        if str(form.get("confirm") or "") != reader.email:
            raise Refused(409, "type the reader's address to confirm removing them")
        await run_in_threadpool(self.store.subscribers.remove_subscriber, reader.email)
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "reader.remove",
            reader.email,
            "forgotten with their delivery history",
        )
        return see_other("/admin/readers")

    async def edit_reader(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        try:
            topics = parse_topics(str(form.get("topics") or ""))
            cadence = Cadence(str(form.get("cadence") or reader.cadence.value))
        except ValueError as exc:
            raise Refused(400, "cadence must be daily or weekly") from exc
        paused = form.get("paused") == "1"
        await run_in_threadpool(
            self.store.subscribers.update_preferences,
            reader.id,
            topics=topics,
            cadence=cadence,
            paused=paused,
        )
        detail = f"topics {';'.join(topics) or 'all'}, {cadence.value}{', paused' if paused else ''}"
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "reader.edit", reader.email, detail
        )
        return see_other(f"/admin/readers/{reader.id}")

    async def export(self, request: Request) -> Response:
        """Every reader as CSV (the CLI's export format, importable again); the export is audited."""
        signed = await self.c.signed_in(request, "editor")

        def write() -> str:
            out = io.StringIO()
            export_csv(self.store.subscribers.list_subscribers(), out)
            return out.getvalue()

        text = await run_in_threadpool(write)
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "readers.export",
            "",
            f"{text.count(chr(10)) - 1} readers",
        )
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="readers.csv"'},
        )

    async def _reader(self, reader_id: int) -> Any:
        reader = await run_in_threadpool(self.store.subscribers.get_subscriber, reader_id)
        if reader is None:
            raise Refused(404, f"no reader #{reader_id}")
        return reader

    # -- preview and test send ---------------------------------------------------------------------

    async def preview(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "editor")
        email = request.query_params.get("email", "")[:320].strip()
        preview, error = None, ""
        if email:
            try:
                preview = await run_in_threadpool(self.c.engine.preview, email)
            except NewsletterError as exc:
                error = exc.message
        reasons = self.c.engine.reasons(preview) if preview else []
        sent = request.query_params.get("sent") == "1"
        return self.c.page(
            request,
            "preview.html",
            signed=signed,
            title="Preview",
            email=email,
            preview=preview,
            reasons=reasons,
            error=error,
            sent=sent,
        )

    async def preview_frame(self, request: Request) -> Response:
        await self.c.signed_in(request, "editor")
        preview = await run_in_threadpool(self.c.engine.preview, request.query_params.get("email", "")[:320])
        return HTMLResponse(preview.html or "<p>Nothing new for this reader now.</p>")

    async def test_send(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        reader = str(form.get("email") or "")[:320]
        await run_in_threadpool(self.c.engine.send_test, reader, signed.operator.email)
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "preview.test-send",
            reader,
            f"to {signed.operator.email}",
        )
        from urllib.parse import quote

        return see_other(f"/admin/preview?email={quote(reader)}&sent=1")

    # -- import by upload -----------------------------------------------------------------------------

    async def import_form(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "editor")
        return self.c.page(
            request,
            "import.html",
            signed=signed,
            title="Import readers",
            formats=FORMATS,
            preview=None,
            error="",
        )

    async def import_preview(self, request: Request) -> Response:
        """Upload (or change the column choices of) a file: show what the import would read."""
        signed, form = await self.c.posted(request, "editor", upload=True)
        fmt = str(form.get("format") or "") or None
        if fmt is not None and fmt not in FORMATS:
            raise Refused(400, f"unknown format {fmt!r}")
        upload_id = str(form.get("upload") or "")
        owner = signed.session.id_hash
        file = form.get("file")
        if isinstance(file, UploadFile) and file.filename:
            data = await file.read()
            upload_id = await run_in_threadpool(self.c.uploads.hold, owner, file.filename[:200], data)
        elif not upload_id:
            raise Refused(400, "choose a CSV file to upload")
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        try:
            upload = self.c.uploads.get(upload_id, owner)
            shown = await run_in_threadpool(preview_import, upload_id, upload, fmt=fmt, mapping=mapping)
        except NewsletterError as exc:
            return self.c.page(
                request,
                "import.html",
                signed=signed,
                status=400,
                title="Import readers",
                formats=FORMATS,
                preview=None,
                error=exc.message,
            )
        return self.c.page(
            request,
            "import.html",
            signed=signed,
            title="Import readers: check the columns",
            formats=FORMATS,
            preview=shown,
            fields=FIELDS,
            fmt=fmt or "",
            error="",
        )

    async def import_run(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        fmt = str(form.get("format") or "") or None
        upload_id = str(form.get("upload") or "")
        upload = self.c.uploads.get(upload_id, signed.session.id_hash)
        mapping = mapping_from({k: v for k, v in form.items() if isinstance(v, str)})
        result = await run_in_threadpool(
            run_import,
            self.store,
            upload,
            fmt=None if fmt is None else fmt,
            mapping=mapping,
            update=form.get("update") == "1",
        )
        self.c.uploads.drop(upload_id)
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "readers.import",
            upload.filename,
            f"{result.format}: {result.summary()}",
        )
        return self.c.page(
            request,
            "import_done.html",
            signed=signed,
            title="Import finished",
            result=result,
            bad=result.bad_rows[:50],
        )

    # -- admin views ------------------------------------------------------------------------------------

    async def audit_log(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "admin")
        page = page_number(request)
        entries = await run_in_threadpool(
            self.store.accounts.audit_entries, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
        return self.c.page(
            request,
            "audit.html",
            signed=signed,
            title="Audit log",
            entries=entries[:PAGE_SIZE],
            page=page,
            more=len(entries) > PAGE_SIZE,
        )

    async def suppressions(self, request: Request) -> Response:
        """The suppression list: kept as hashes of mailboxes, so it can be checked, not read out."""
        signed = await self.c.signed_in(request, "admin")
        email = request.query_params.get("email", "")[:320].strip()
        status = await run_in_threadpool(self.store.suppressions.status_of, email) if email else None
        total = await run_in_threadpool(self.store.suppressions.count)
        totals = await run_in_threadpool(self.store.console.status_totals)
        return self.c.page(
            request,
            "suppressions.html",
            signed=signed,
            title="Suppression list",
            email=email,
            found=status,
            total=total,
            totals=totals,
        )

    async def settings_view(self, request: Request) -> Response:
        """Every configuration key's effective value; secrets only say whether they are set."""
        signed = await self.c.signed_in(request, "admin")
        settings = self.c.settings
        rows = []
        for key, variable, _default in describe_keys():
            section, name = key.split(".")
            value = getattr(getattr(settings, section), name)
            if (section, name) in SECRET_KEYS:
                value = "(set)" if value else "(not set)"
            rows.append((key, variable, str(value)))
        return self.c.page(request, "settings.html", signed=signed, title="Settings", rows=rows)

    async def users(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "admin")
        users = await run_in_threadpool(self.store.accounts.list_users)
        return self.c.page(request, "users.html", signed=signed, title="Users", users=users, roles=ROLES)

    async def create_user(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "admin")
        email, role = str(form.get("email") or "")[:320], str(form.get("role") or "viewer")
        user = await run_in_threadpool(
            self.c.accounts.create_user, email, role=role, password=str(form.get("password") or "")
        )
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "user.create", user.email, f"role {role}"
        )
        return see_other("/admin/users")

    async def change_role(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "admin")
        role = str(form.get("role") or "")
        user = await run_in_threadpool(self.c.accounts.set_role, request.path_params["user_id"], role)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "user.role", user.email, f"{user.role} -> {role}"
        )
        return see_other("/admin/users")

    # -- API tokens --------------------------------------------------------------------------------------

    async def tokens(self, request: Request, *, new_token: str = "") -> Response:
        signed = await self.c.signed_in(request)
        tokens = await run_in_threadpool(self.store.accounts.list_tokens, signed.operator.id)
        return self.c.page(
            request, "tokens.html", signed=signed, title="API tokens", tokens=tokens, new_token=new_token
        )

    async def create_token(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "viewer")
        name = str(form.get("name") or "token")[:100]
        token, token_id = await run_in_threadpool(self.c.accounts.issue_token, signed.operator, name)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "token.create", f"token #{token_id}", name
        )
        # Shown once, in this answer only (no redirect: a reload must not show it again).
        return await self.tokens(request, new_token=token)

    async def revoke_token(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "viewer")
        token_id = request.path_params["token_id"]
        token = await run_in_threadpool(self.store.accounts.get_token, token_id)
        if token is None or (token.user_id != signed.operator.id and signed.operator.role != "admin"):
            raise Refused(404, f"no token #{token_id} of yours")
        await run_in_threadpool(self.store.accounts.revoke_token, token_id)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "token.revoke", f"token #{token_id}", token.name
        )
        return see_other("/admin/tokens")

    # -- assets ----------------------------------------------------------------------------------------------

    async def stylesheet(self, request: Request) -> Response:
        css = self.c.env.get_template("admin/console.css").render(site=self.c.settings.site)
        return Response(css, media_type="text/css")

    async def script(self, request: Request) -> Response:
        js = self.c.env.get_template("admin/console.js").render()
        return Response(js, media_type="text/javascript")

    async def root(self, request: Request) -> Response:
        return see_other("/admin/")


def console_routes(console: Console) -> list[BaseRoute]:
    p = Pages(console)
    return [
        Route("/", p.root, methods=["GET"]),
        Route("/admin", p.root, methods=["GET"]),
        Route("/admin/", p.dashboard, methods=["GET"]),
        Route("/admin/login", p.login, methods=["GET", "POST"]),
        Route("/admin/logout", p.logout, methods=["POST"]),
        Route("/admin/progress.json", p.progress, methods=["GET"]),
        Route("/admin/editions", p.editions, methods=["GET"]),
        Route("/admin/editions/{edition_id:int}", p.edition, methods=["GET"]),
        Route("/admin/editions/{edition_id:int}/variants/{variant_id:int}", p.variant, methods=["GET"]),
        Route(
            "/admin/editions/{edition_id:int}/variants/{variant_id:int}/frame",
            p.variant_frame,
            methods=["GET"],
        ),
        Route("/admin/editions/{edition_id:int}/pause", p.pause, methods=["POST"]),
        Route("/admin/editions/{edition_id:int}/resume", p.resume, methods=["POST"]),
        Route("/admin/send", p.send_form, methods=["GET"]),
        Route("/admin/send", p.send, methods=["POST"]),
        Route("/admin/readers", p.readers, methods=["GET"]),
        Route("/admin/readers/add", p.add_reader, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}", p.reader, methods=["GET"]),
        Route("/admin/readers/{reader_id:int}/reactivate", p.reactivate, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}/remove", p.remove, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}/edit", p.edit_reader, methods=["POST"]),
        Route("/admin/readers/export.csv", p.export, methods=["GET"]),
        Route("/admin/suppressions", p.suppressions, methods=["GET"]),
        Route("/admin/settings", p.settings_view, methods=["GET"]),
        Route("/admin/preview", p.preview, methods=["GET"]),
        Route("/admin/preview/frame", p.preview_frame, methods=["GET"]),
        Route("/admin/preview/test", p.test_send, methods=["POST"]),
        Route("/admin/import", p.import_form, methods=["GET"]),
        Route("/admin/import/preview", p.import_preview, methods=["POST"]),
        Route("/admin/import/run", p.import_run, methods=["POST"]),
        Route("/admin/audit", p.audit_log, methods=["GET"]),
        Route("/admin/users", p.users, methods=["GET"]),
        Route("/admin/users/new", p.create_user, methods=["POST"]),
        Route("/admin/users/{user_id:int}/role", p.change_role, methods=["POST"]),
        Route("/admin/tokens", p.tokens, methods=["GET"]),
        Route("/admin/tokens/new", p.create_token, methods=["POST"]),
        Route("/admin/tokens/{token_id:int}/revoke", p.revoke_token, methods=["POST"]),
        Route("/admin/static/console.css", p.stylesheet, methods=["GET"]),
        Route("/admin/static/console.js", p.script, methods=["GET"]),
    ]
