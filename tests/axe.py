"""axe-core accessibility checks for Playwright pages (shared by the web and sink browser tests).

`make axe` (run by `make test`) installs axe-core from npm into .npm/. A test calls
`axe_violations(page)` after the page has loaded; it returns every violation axe-core finds
(rule id, impact, the offending nodes). When npm or axe-core is missing the test is skipped
with the reason, never passed silently.

The script is injected through Playwright's evaluate (DevTools), not a <script> tag, so it
runs on pages whose Content-Security-Policy forbids inline scripts: the CSP under test stays on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

AXE_JS = Path(__file__).resolve().parent.parent / ".npm" / "node_modules" / "axe-core" / "axe.min.js"
MISSING_REASON = f"axe-core is not installed at {AXE_JS} (run `make axe`: npm install --prefix .npm axe-core)"


@dataclass(frozen=True)
class Violation:
    """One failed axe-core rule: its id, impact and the CSS targets of the nodes that fail it."""

    rule: str
    impact: str | None
    help: str
    nodes: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.rule} ({self.impact}): {self.help} at {', '.join(self.nodes)}"


@cache
def axe_source() -> str:
    """axe.min.js, or a pytest skip saying how to install it."""
    if not AXE_JS.is_file():
        pytest.skip(MISSING_REASON)
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(page: Any, *, context: str | None = None) -> list[Violation]:
    """Run axe-core on `page` (a Playwright sync Page), optionally within the `context` selector.

    Sandboxed frames whose content axe cannot reach are not violations (axe lists them as
    incomplete); everything else it finds is returned.
    """
    source = axe_source()
    # Evaluated through DevTools inside a function, not added as a <script>: the page's CSP (which
    # forbids inline scripts on the sink and web pages) does not apply, and axe sets window.axe itself.
    page.evaluate("() => {" + source + "\n}")
    raw = page.evaluate(
        "async (ctx) => { const r = await axe.run(ctx || document, {resultTypes: ['violations']});"
        " return JSON.stringify(r.violations); }",
        context,
    )
    return [
        Violation(
            rule=item["id"],
            impact=item.get("impact"),
            help=item.get("help", ""),
            nodes=tuple(" ".join(map(str, node.get("target", []))) for node in item.get("nodes", [])),
        )
        for item in json.loads(raw)
    ]


def assert_no_violations(page: Any, *, label: str = "") -> None:
    """Fail with every violation listed, one a line, when axe-core finds any on `page`."""
    found = axe_violations(page)
    where = label or page.url
    assert not found, f"axe-core violations on {where}:\n" + "\n".join(str(v) for v in found)
