"""What every group of console pages shares: the console, paging and the redirect after a POST."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse

from newsletter.admin.context import Console
from newsletter.models import EditionStatus

PAGE_SIZE = 50
ACTIVE = (EditionStatus.PLANNED, EditionStatus.SENDING)


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(1, int(raw)) if raw.isdigit() and len(raw) < 7 else 1


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class PageGroup:
    """A group of handlers over one ``Console`` (``self.c``) and its store."""

    def __init__(self, console: Console) -> None:
        self.c = console
        self.store = console.store
