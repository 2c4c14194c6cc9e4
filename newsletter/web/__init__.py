"""The subscriber-facing web app: signup, double opt-in, one-click unsubscribe,
preferences, lost links and the archive.

``create_app(service, dev=...)`` builds the Starlette app; ``newsletter serve``
(``newsletter.cli.serve``) runs it under uvicorn. The web app is an edge: it
imports the core, never the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so `newsletter --help` (which registers `serve`) never imports Starlette.
    if name == "create_app":
        from newsletter.web.app import create_app

        return create_app
    raise AttributeError(name)
