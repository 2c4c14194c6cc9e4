"""The readers: search, one reader's page, add, edit, reactivate, remove, export."""

from __future__ import annotations

import io
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.accounts import SignedIn
from newsletter.admin.context import Refused
from newsletter.admin.pages.base import PAGE_SIZE, PageGroup, page_number, see_other
from newsletter.admin.security import client_of
from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.subscriptions import export_csv
from newsletter.subscriptions.operations import (
    Actor,
    add_reader,
    edit_reader,
    reactivate_reader,
    remove_reader,
)


class ReaderPages(PageGroup):
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
        reader, _created = await run_in_threadpool(
            add_reader,
            self.store,
            self._actor(request, signed),
            str(form.get("email") or ""),
            name=str(form.get("name") or ""),
            topics=str(form.get("topics") or ""),
        )
        return see_other(f"/admin/readers/{reader.id}")

    async def reactivate(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        await run_in_threadpool(reactivate_reader, self.store, self._actor(request, signed), reader)
        return see_other(f"/admin/readers/{reader.id}")

    async def remove(self, request: Request) -> Response:
        """Remove a reader (typing their address confirms it); ``forget`` erases them, as they asked."""
        signed, form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        if str(form.get("confirm") or "") != reader.email:
            raise Refused(409, "type the reader's address to confirm removing them")
        await run_in_threadpool(
            remove_reader,
            self.store,
            self._actor(request, signed),
            reader.email,
            forget=form.get("forget") == "1",
        )
        return see_other("/admin/readers")

    async def edit_reader(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "editor")
        reader = await self._reader(request.path_params["reader_id"])
        try:
            cadence = Cadence(str(form.get("cadence") or reader.cadence.value))
        except ValueError as exc:
            raise Refused(400, "cadence must be daily or weekly") from exc
        await run_in_threadpool(
            edit_reader,
            self.store,
            self._actor(request, signed),
            reader,
            topics=str(form.get("topics") or ""),
            cadence=cadence,
            paused=form.get("paused") == "1",
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

    @staticmethod
    def _actor(request: Request, signed: SignedIn) -> Actor:
        return Actor(signed.operator.email, client=client_of(request))

    async def _reader(self, reader_id: int) -> Subscriber:
        reader = await run_in_threadpool(self.store.subscribers.get_subscriber, reader_id)
        if reader is None:
            raise Refused(404, f"no reader #{reader_id}")
        return reader
