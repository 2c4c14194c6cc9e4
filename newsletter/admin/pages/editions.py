"""The dashboard, the editions and their variants, the progress JSON, pause and resume."""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from newsletter.admin.context import Refused
from newsletter.admin.pages.base import ACTIVE, PAGE_SIZE, PageGroup, page_number, see_other
from newsletter.admin.security import client_of
from newsletter.content.render import web_version
from newsletter.models import DeliveryState


class EditionPages(PageGroup):
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
                    "started": e.started_at.strftime("%Y-%m-%d %H:%M:%S") if e.started_at else None,
                    "finished": e.finished_at.strftime("%Y-%m-%d %H:%M:%S") if e.finished_at else None,
                    "counts": e.counts,
                    "total": sum(e.counts.values()),
                    "done": sum(n for s, n in e.counts.items() if s not in ("pending", "sending")),
                }
                for e in editions
            ]

        return JSONResponse({"editions": await run_in_threadpool(read)})

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
        # The engine writes the audit entry, with the reason, as for every pause.
        by, client = signed.operator.email, client_of(request)
        await run_in_threadpool(self.c.engine.pause, edition_id, by=by, client=client)
        return see_other(f"/admin/editions/{edition_id}")

    async def resume(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "editor")
        edition_id = request.path_params["edition_id"]
        by, client = signed.operator.email, client_of(request)
        await run_in_threadpool(self.c.engine.resume, edition_id, by=by, client=client)
        return see_other(f"/admin/editions/{edition_id}")
