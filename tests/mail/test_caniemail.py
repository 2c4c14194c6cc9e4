"""caniemail's client data (the doiuse-email npm package) finds no unsupported feature in any
mail type for Gmail, Outlook, Apple Mail and Yahoo, beyond this short allow-list.

ALLOWED: features whose absence in a client degrades nothing a reader needs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.mail.helpers import MAIL_TYPES

CLI = (
    Path(__file__).resolve().parents[2]
    / ".npm"
    / "caniemail"
    / "node_modules"
    / "doiuse-email"
    / "bin"
    / "cli.js"
)
CLIENTS = "gmail.*,outlook.*,apple-mail.*,yahoo.*"
ALLOWED = {
    "<body> element": (
        "Outlook and Yahoo mobile apps replace <body> with a <div>; the wrapper table repeats its background"
    ),
    "role attribute": "role=presentation is an accessibility hint; clients that drop it lose nothing visible",
    "border-radius": "Outlook on Windows draws the badges and the button with square corners",
    "word-break": (
        "long words wrap where supported;"
        " elsewhere (Outlook on Windows: a fixed 600 px ghost table anyway) they may not"
    ),
}
FEATURE = re.compile(r"^`(.+?)` is not supported by `(.+?)`")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not CLI.exists(),
    reason=f"node or doiuse-email is not installed ({CLI}; `make caniemail` installs it)",
)


def caniemail_errors(html: str, tmp_path: Path) -> list[tuple[str, str]]:
    """(feature, client) for every error doiuse-email reports."""
    page = tmp_path / "mail.html"
    page.write_text(html, encoding="utf-8")
    run = subprocess.run(
        ["node", str(CLI), "-e", CLIENTS, str(page)], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(run.stdout)
    return [(m.group(1), m.group(2)) for e in result.get("errors", []) if (m := FEATURE.match(e))] + [
        ("unparsed", e) for e in result.get("errors", []) if not FEATURE.match(e)
    ]


@pytest.mark.parametrize("kind", MAIL_TYPES)
def test_caniemail_reports_nothing_beyond_the_allow_list(
    htmls: dict[str, str], tmp_path: Path, kind: str
) -> None:
    """Regression: @media (dropped by Gmail mobile web and Outlook), display:none,
    opacity and overflow in the preheader."""
    errors = caniemail_errors(htmls[kind], tmp_path)
    print(f"caniemail {kind}: {len(errors)} errors, features {sorted({f for f, _ in errors})}")
    unexpected = sorted({f"{feature} ({client})" for feature, client in errors if feature not in ALLOWED})
    assert not unexpected, f"{kind}: {unexpected}"
