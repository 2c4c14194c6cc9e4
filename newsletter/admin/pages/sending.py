"""Send now (with its confirmed count), a reader's preview and the test send."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.admin.context import Refused
from newsletter.admin.engine import MANUAL
from newsletter.admin.pages.base import PageGroup, see_other
from newsletter.errors import AudienceChanged, NewsletterError


class SendingPages(PageGroup):
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
        if not confirmed.isdigit() or len(confirmed) > 9:
            raise Refused(409, "this send was not confirmed with a reader count", hint="Open Send now again.")
        if int(confirmed) == 0:
            raise Refused(409, "no reader has anything new; nothing to send")
        try:
            # The engine plans under the schedule's lock and sends exactly the confirmed count, or
            # refuses before writing anything when the plan differs (the count changed since shown).
            started = await run_in_threadpool(self.c.engine.start_send, schedule, confirmed=int(confirmed))
        except AudienceChanged as exc:
            raise Refused(409, exc.message, hint=exc.hint) from exc
        edition = started.edition
        await run_in_threadpool(
            self.c.audit,
            request,
            signed.operator.email,
            "edition.send",
            edition.key,
            f"{started.readers} readers",
        )
        return see_other(f"/admin/editions/{edition.id}")

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
        # The page that holds this frame read the feed a moment ago: render from what is stored.
        preview = await run_in_threadpool(
            partial(self.c.engine.preview, request.query_params.get("email", "")[:320], fetch=False)
        )
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
