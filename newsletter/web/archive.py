"""The public archive of published digests, and the site's stylesheet."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.content.render import web_version
from newsletter.web.site import PageError, Site

MAX_DB_INT = 2**63 - 1  # larger path ids cannot name a row (and overflow the driver)


class ArchivePages(Site):
    """/archive, /archive/ID and /static/site.css."""

    # -- archive -------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        entries = await run_in_threadpool(self.service.store.editions.archive_entries)
        return self.page("archive.html", title="Archive", entries=entries)

    async def archive_item(self, request: Request) -> Response:
        variant_id = request.path_params["variant_id"]
        html = (
            None
            if variant_id > MAX_DB_INT
            else await run_in_threadpool(self.service.store.editions.published_variant_html, variant_id)
        )
        if html is None:
            raise PageError(
                404,
                "Not in the archive",
                "There is no published digest at this address. The archive lists every one.",
            )
        return HTMLResponse(web_version(html, manage_url=f"{self.base_url}/manage"))

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
