"""Import by upload: the column-mapping preview, then the CLI's importer with its presets."""

from __future__ import annotations

import re
from typing import Any

from newsletter.models import SubscriberStatus

from .helpers import ORIGIN

MAILCHIMP = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,"
    "LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES\r\n"
    "dana@example.org,Dana,Scully,2,2024-01-02 10:00:00,,2024-01-02 10:05:00,,,,,,,,,"
    "2024-01-02 10:05:00,1,a1,\r\n"
    "fox@example.org,Fox,Mulder,3,2024-01-03 10:00:00,,2024-01-03 10:05:00,,,,,,,,,"
    "2024-01-03 10:05:00,2,a2,\r\n"
    "not-an-address,Bad,Row,1,,,,,,,,,,,,,3,a3,\r\n"
)


def upload(console: Any, content: str, *, name: str = "members_export.csv", fmt: str = "") -> Any:
    return console.client.post(
        "/admin/import/preview",
        data={"csrf": console.csrf("/admin/import"), "format": fmt},
        files={"file": (name, content.encode("utf-8"), "text/csv")},
        headers=ORIGIN,
    )


def finished(console: Any, started: Any) -> Any:
    """The page of an import started by ``started`` (a 303 to it), once the import has ended."""
    assert started.status_code == 303, started.text
    page = started.headers["location"]
    console.app.state.console.imports.wait(page.rsplit("/", 1)[1], timeout=60)
    return console.client.get(page)


def test_mailchimp_export_is_previewed_with_its_columns_then_imported(signed_in: Any) -> None:
    console = signed_in("editor")
    shown = upload(console, MAILCHIMP)
    assert shown.status_code == 200, shown.text
    assert "read as a <strong>mailchimp</strong> export" in shown.text
    assert re.search(r'<option value="Email Address" selected>', shown.text)
    assert "joined: First Name + Last Name" in shown.text
    assert "dana@example.org</td><td>Dana Scully</td><td>active" in shown.text
    assert (
        console.service.store.subscribers.find_subscriber("dana@example.org") is None
    )  # nothing imported yet
    upload_id = re.search(r'name="upload" value="([^"]+)"', shown.text)
    assert upload_id
    done = finished(
        console,
        console.client.post(
            "/admin/import/run",
            data={
                "csrf": console.csrf("/admin/import"),
                "upload": upload_id.group(1),
                "format": "",
                "map_email": "Email Address",
            },
            headers=ORIGIN,
        ),
    )
    assert done.status_code == 200, done.text
    assert "2 added" in done.text and "1 invalid" in done.text
    dana = console.service.store.subscribers.find_subscriber("dana@example.org")
    assert dana is not None and dana.name == "Dana Scully" and dana.status is SubscriberStatus.ACTIVE
    assert any(
        e.action == "readers.import" and "2 added" in e.detail
        for e in console.service.store.accounts.audit_entries()
    )
    # The upload is used up.
    again = console.client.post(
        "/admin/import/run",
        data={"csrf": console.csrf("/admin/import"), "upload": upload_id.group(1)},
        headers=ORIGIN,
    )
    assert again.status_code == 400 and "upload the file again" in again.text.lower()


def test_column_choice_overrides_the_preset(signed_in: Any) -> None:
    console = signed_in("editor")
    content = "Contact,Who\r\nhal@example.org,Hal\r\n"
    refused = upload(console, content)
    assert refused.status_code == 400 and "no email column" in refused.text
    upload_id = None
    shown = console.client.post(
        "/admin/import/preview",
        data={"csrf": console.csrf("/admin/import"), "map_email": "Contact", "map_name": "Who"},
        files={"file": ("list.csv", content.encode(), "text/csv")},
        headers=ORIGIN,
    )
    assert shown.status_code == 200 and "hal@example.org</td><td>Hal</td>" in shown.text
    upload_id = re.search(r'name="upload" value="([^"]+)"', shown.text)
    assert upload_id
    done = finished(
        console,
        console.client.post(
            "/admin/import/run",
            data={
                "csrf": console.csrf("/admin/import"),
                "upload": upload_id.group(1),
                "map_email": "Contact",
                "map_name": "Who",
            },
            headers=ORIGIN,
        ),
    )
    assert "1 added" in done.text


def test_viewer_cannot_import_and_an_upload_belongs_to_its_session(signed_in: Any, console: Any) -> None:
    editor = signed_in("editor")
    shown = upload(editor, MAILCHIMP)
    upload_id = re.search(r'name="upload" value="([^"]+)"', shown.text)
    assert upload_id
    editor.login("admin@console.example.org")  # a new session (rotation): the old upload is not its own
    r = editor.client.post(
        "/admin/import/run",
        data={"csrf": editor.csrf("/admin/"), "upload": upload_id.group(1)},
        headers=ORIGIN,
    )
    assert r.status_code == 400
    editor.login("viewer@console.example.org")
    assert editor.client.get("/admin/import").status_code == 403
    assert console.service.store.subscribers.find_subscriber("dana@example.org") is None


def test_api_import_uses_the_same_presets_and_column_map(signed_in: Any) -> None:
    console = signed_in("editor")
    made = console.post("/admin/tokens/new", {"name": "import"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}", "Content-Type": "text/csv"}

    def imported(r: Any) -> dict[str, Any]:
        """The API's answer to an import (202 and its job), then the job's once it has ended."""
        assert r.status_code == 202, r.text
        console.app.state.console.imports.wait(r.json()["id"], timeout=60)
        job = console.client.get(r.headers["location"], headers=auth)
        assert job.status_code == 200 and job.json()["state"] == "finished", job.text
        return job.json()["result"]

    r = imported(console.client.post("/api/v1/import", content=MAILCHIMP.encode(), headers=auth))
    assert r["format"] == "mailchimp" and r["added"] == 2 and r["invalid"] == 1
    r = imported(
        console.client.post(
            "/api/v1/import",
            params={"map": ["email=Contact"]},
            content=b"Contact,Who\r\nhal@example.org,Hal\r\n",
            headers=auth,
        )
    )
    assert r["added"] == 1
    # A file without an address column is refused at once, before any row is read.
    no_email = console.client.post("/api/v1/import", content=b"Who,When\r\nHal,today\r\n", headers=auth)
    assert no_email.status_code == 400 and "no email column" in no_email.text
    assert console.client.get("/api/v1/import/nonsense", headers=auth).status_code == 404
    assert console.client.post("/api/v1/import", content=b"\xff\xfe\x00bad", headers=auth).status_code == 400
    assert (
        console.client.post(
            "/api/v1/import", params={"map": ["nonsense"]}, content=MAILCHIMP.encode(), headers=auth
        ).status_code
        == 400
    )
