"""The local SMTP sink: receives, stores, checks and shows mail; injects provider faults.

Stands on its own (aiosmtpd, the stdlib, Starlette/uvicorn for the viewer, httpx for the
one-click action) and imports nothing else from `newsletter`, so it can test anything.

Public names are imported lazily so that `import newsletter.sink.pytest_plugin` (loaded by
every pytest run in the environment) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.sink.checks import Check
    from newsletter.sink.errors import SinkError
    from newsletter.sink.faults import FaultRule, FaultSet, parse_fault_spec
    from newsletter.sink.message import StoredMessage
    from newsletter.sink.server import SinkServer

_EXPORTS = {
    "SinkServer": "newsletter.sink.server",
    "StoredMessage": "newsletter.sink.message",
    "Check": "newsletter.sink.checks",
    "FaultRule": "newsletter.sink.faults",
    "FaultSet": "newsletter.sink.faults",
    "parse_fault_spec": "newsletter.sink.faults",
    "SinkError": "newsletter.sink.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'newsletter.sink' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
