"""One module of reader operations: the CLI, the console and the API change a reader the same way,
and each change is in the audit log (the CLI's under ``cli:<login>``).

The three callers work on one SQLite file: the console and its API under Starlette's
TestClient (``signed_in``), the CLI through click's runner (``cli``) on the same database.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from newsletter.models import SubscriberStatus
from newsletter.storage.suppressions import mailbox_hash
from tests.core import test_core_cli
from tests.core.test_core_cli import clean_error, ok

from .helpers import Operator

cli = test_core_cli.cli  # the shared CLI fixture, on the console's database (both use base_env)
CLI_ACTOR = f"cli:{getpass.getuser()}"


def trail(console: Operator, target: str) -> list[tuple[str, str, str]]:
    """(actor, action, detail) of the audit entries naming ``target``, oldest first."""
    entries = console.service.store.accounts.audit_entries(target=target, limit=100)
    return [(e.actor, e.action, e.detail) for e in reversed(entries)]


def test_cli_reader_changes_are_in_the_audit_log(cli: Any, signed_in: Callable[[str], Operator]) -> None:
    console = signed_in("admin")
    store = console.service.store
    ok(cli("subscribers", "add", "Eve@Example.org", "--name", "Eve", "--topics", "Cameras"))
    assert trail(console, "eve@example.org") == [(CLI_ACTOR, "reader.add", "")]
    ok(cli("subscribers", "edit", "eve@example.org", "--cadence", "weekly", "--paused"))
    eve = store.subscribers.find_subscriber("eve@example.org")
    assert eve is not None and eve.paused and eve.cadence.value == "weekly" and eve.topics == ("Cameras",)
    store.subscribers.set_status(eve.id, SubscriberStatus.UNSUBSCRIBED, reason="the reader left")
    ok(cli("subscribers", "reactivate", "eve@example.org"))
    ok(cli("subscribers", "remove", "eve@example.org"))

    assert trail(console, "eve@example.org") == [
        (CLI_ACTOR, "reader.add", ""),
        (CLI_ACTOR, "reader.edit", "topics Cameras, weekly, paused"),
        (CLI_ACTOR, "reader.reactivate", "was unsubscribed"),
        (CLI_ACTOR, "reader.remove", "with their delivery history"),
    ]
    # The audit page an admin reads shows them too.
    page = console.client.get("/admin/audit").text
    assert page.count(CLI_ACTOR) >= 4 and "reader.edit" in page


def test_cli_edit_needs_a_change_and_a_known_reader(cli: Any) -> None:
    assert "nothing to change" in clean_error(cli("subscribers", "edit", "ana@example.org"))
    out = clean_error(cli("subscribers", "edit", "nobody@example.org", "--paused"))
    assert "nobody@example.org is not a subscriber" in out and "subscribers list" in out


def _api_token(console: Operator) -> dict[str, str]:
    made = console.post("/admin/tokens/new", {"name": "ops"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    return {"Authorization": f"Bearer {token.group(1)}"}


@pytest.mark.parametrize("caller", ["cli", "console", "api"])
def test_forgetting_a_reader_leaves_only_a_hash_in_the_audit_log(
    caller: str, cli: Any, signed_in: Callable[[str], Operator]
) -> None:
    """Erasure on request: no audit entry names the address afterwards, the ones written before
    (the console's add) included; the entries name the suppression list's hash instead."""
    console = signed_in("editor")
    store = console.service.store
    address = "forget.me@example.net"
    console.post("/admin/readers/add", {"email": address, "name": "Forgettable"}, csrf_from="/admin/readers")
    reader = store.subscribers.find_subscriber(address)
    assert reader is not None and trail(console, address)[0][1] == "reader.add"

    if caller == "cli":
        ok(cli("subscribers", "remove", address, "--forget"))
    elif caller == "console":
        gone = console.post(
            f"/admin/readers/{reader.id}/remove",
            {"confirm": address, "forget": "1"},
            csrf_from=f"/admin/readers/{reader.id}",
        )
        assert gone.status_code == 303
    else:
        auth = _api_token(console)
        answer = console.client.delete(f"/api/v1/readers/{reader.id}?forget=true", headers=auth)
        assert answer.status_code == 200 and address not in answer.text

    assert store.subscribers.find_subscriber(address) is None
    assert store.suppressions.status_of(address) is SubscriberStatus.UNSUBSCRIBED
    entries = store.accounts.audit_entries(limit=1000)
    assert not [e for e in entries if address in f"{e.target} {e.detail}"]
    hashed = trail(console, "sha256:" + mailbox_hash(address))
    assert [action for _actor, action, _detail in hashed] == ["reader.add", "reader.forget"]


# -- one reader, three callers: the same state after every step ------------------------------------


class Callers:
    """The same reader operation as the CLI, the console and the API make it."""

    def __init__(self, cli: Any, console: Operator) -> None:
        self.cli, self.console, self.store = cli, console, console.service.store
        self.auth = _api_token(console)

    def _id(self, email: str) -> int:
        reader = self.store.subscribers.find_subscriber(email)
        assert reader is not None
        return reader.id

    def add(self, caller: str, email: str, name: str, topics: str) -> None:
        if caller == "cli":
            ok(self.cli("subscribers", "add", email, "--name", name, "--topics", topics))
        elif caller == "console":
            page = "/admin/readers"
            data = {"email": email, "name": name, "topics": topics}
            assert self.console.post("/admin/readers/add", data, csrf_from=page).status_code == 303
        else:
            body = {"email": email, "name": name, "topics": [t for t in topics.split(";") if t]}
            assert self.console.client.post("/api/v1/readers", json=body, headers=self.auth).status_code in (
                200,
                201,
            )

    def edit(self, caller: str, email: str, topics: str, cadence: str, paused: bool) -> None:
        reader_id = self._id(email)
        if caller == "cli":
            ok(
                self.cli(
                    "subscribers",
                    "edit",
                    email,
                    "--topics",
                    topics,
                    "--cadence",
                    cadence,
                    "--paused" if paused else "--unpaused",
                )
            )
        elif caller == "console":
            data = {"topics": topics, "cadence": cadence, **({"paused": "1"} if paused else {})}
            page = f"/admin/readers/{reader_id}"
            assert self.console.post(f"{page}/edit", data, csrf_from=page).status_code == 303
        else:
            body = {"topics": [t for t in topics.split(";") if t], "cadence": cadence, "paused": paused}
            answer = self.console.client.patch(f"/api/v1/readers/{reader_id}", json=body, headers=self.auth)
            assert answer.status_code == 200

    def reactivate(self, caller: str, email: str) -> None:
        reader_id = self._id(email)
        if caller == "cli":
            ok(self.cli("subscribers", "reactivate", email))
        elif caller == "console":
            page = f"/admin/readers/{reader_id}"
            assert self.console.post(f"{page}/reactivate", csrf_from=page).status_code == 303
        else:
            url = f"/api/v1/readers/{reader_id}/reactivate"
            assert self.console.client.post(url, headers=self.auth).status_code == 200

    def remove(self, caller: str, email: str) -> None:
        reader_id = self._id(email)
        if caller == "cli":
            ok(self.cli("subscribers", "remove", email))
        elif caller == "console":
            page = f"/admin/readers/{reader_id}"
            assert self.console.post(f"{page}/remove", {"confirm": email}, csrf_from=page).status_code == 303
        else:
            assert (
                self.console.client.delete(f"/api/v1/readers/{reader_id}", headers=self.auth).status_code
                == 200
            )

    def state(self, email: str) -> tuple[Any, ...]:
        """What a reader is, apart from their address, id and times; and whether they are suppressed."""
        reader = self.store.subscribers.find_subscriber(email)
        held = self.store.suppressions.status_of(email)
        if reader is None:
            return (None, held)
        return (reader.name, reader.status, reader.topics, reader.cadence, reader.paused, held)

    def actions(self, email: str) -> list[tuple[str, str]]:
        """The audit trail of the reader: (action, detail without the API's mark)."""
        return [
            (action, detail.removesuffix(" (API)").strip())
            for _actor, action, detail in trail(self.console, email)
        ]


STEPS: list[tuple[str, tuple[Any, ...]]] = [
    ("add", ("Ida Reader", "Cameras;Access control")),
    ("add", ("Someone Else", "")),  # an address already here: unchanged
    ("edit", ("Cameras", "weekly", True)),
    ("edit", ("", "daily", False)),
    ("bounce", ()),
    ("reactivate", ()),
    ("reactivate", ()),  # already active
    ("unsubscribe", ()),
    ("remove", ()),
    ("add", ("Ida Again", "")),  # back from the suppression list: unsubscribed, never active
    ("reactivate", ()),
]


def test_every_reader_operation_leaves_the_same_state_through_each_caller(
    cli: Any, signed_in: Callable[[str], Operator], tmp_path: Path
) -> None:
    callers = Callers(cli, signed_in("editor"))
    store = callers.store
    seen: dict[str, list[tuple[Any, ...]]] = {}
    for caller in ("cli", "console", "api"):
        email = f"ida.{caller}@example.org"
        states = []
        for step, args in STEPS:
            if step in ("bounce", "unsubscribe"):  # what a bounce or the reader does, not an operator
                reader = store.subscribers.find_subscriber(email)
                assert reader is not None
                status = SubscriberStatus.BOUNCED if step == "bounce" else SubscriberStatus.UNSUBSCRIBED
                store.subscribers.set_status(reader.id, status, reason=step)
            else:
                getattr(callers, step)(caller, email, *args)
            states.append((step, callers.state(email)))
        seen[caller] = states
    assert seen["cli"] == seen["console"] == seen["api"], seen
    assert seen["cli"][-2][1][1] is SubscriberStatus.UNSUBSCRIBED  # re-added: still suppressed
    assert seen["cli"][-1][1][1] is SubscriberStatus.ACTIVE and seen["cli"][-1][1][-1] is None

    trails = {caller: callers.actions(f"ida.{caller}@example.org") for caller in ("console", "api")}
    assert trails["console"] == trails["api"]
    # The CLI says "already active" and audits nothing for a reactivation that changes nothing.
    assert [a for a in trails["console"] if a != ("reader.reactivate", "was active")] == callers.actions(
        "ida.cli@example.org"
    )
