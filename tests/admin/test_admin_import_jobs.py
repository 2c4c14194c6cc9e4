"""Large imports: an 18 MB export through the console and the API, streamed to disk
and imported in the background with progress; the preview counts every row; bad uploads leave nothing.

The console runs under uvicorn on a loopback port (the browser tests' ``live`` fixture), and
the files go up with httpx streaming them from disk, as a browser or curl would: the server
sees the body in chunks, which is what its memory is judged on.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.service import Service

from .helpers import CSRF_RE, LOGIN_RE, ORIGIN, PASSWORD
from .test_admin_browser import live  # noqa: F401  (the console under uvicorn)
from .test_admin_import import upload

MAILCHIMP_HEADER = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,"
    "LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES\r\n"
)
# 18 MB, as a 100,000-member export with every column is; its rows carry long notes so that the
# test imports a quarter of the rows (the import's speed has its own benchmark).
MEMBERS = 25_000
NOTES = "Met at the ISC West booth; asked about VMS pricing, NDAA compliance and analytics. " * 7


def write_export(path: Path, *, domain: str, members: int = MEMBERS) -> int:
    """A Mailchimp audience export of ``members`` rows of about 730 bytes; its size."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(MAILCHIMP_HEADER)
        for i in range(members):
            out.write(
                f"member{i:06}@{domain},Member,Number {i},2,2024-01-02 10:00:00,192.0.2.{i % 250},"
                f"2024-01-02 10:05:00,192.0.2.{i % 250},51.5072,-0.1276,0,0,Europe/London,GB,ENG,"
                f'2024-01-02 10:05:00,{100000000 + i},{i:012x},"{NOTES}"\r\n'
            )
    return path.stat().st_size


def signed_in_client(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, headers={"Origin": base_url}, timeout=120)
    token = LOGIN_RE.search(client.get("/admin/login").text)
    assert token
    client.post(
        "/admin/login",
        data={"login_token": token.group(1), "email": "editor@console.example.org", "password": PASSWORD},
    )
    return client


def csrf(client: httpx.Client, path: str = "/admin/import") -> str:
    found = CSRF_RE.search(client.get(path).text)
    assert found
    return found.group(1)


def follow(client: httpx.Client, url: str, *, timeout: float = 120) -> list[dict[str, Any]]:
    """Poll a job's JSON until it ends; every answer seen."""
    seen = [client.get(url).json()]
    deadline = time.monotonic() + timeout
    while seen[-1]["state"] in ("waiting", "importing"):
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.05)
        seen.append(client.get(url).json())
    return seen


def test_an_18_mb_export_goes_in_whole_through_the_console_and_the_api_with_progress_to_the_end(
    live: tuple[str, Service, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    base_url, service, app = live
    console_file, api_file = tmp_path / "members_console.csv", tmp_path / "members_api.csv"
    size = write_export(console_file, domain="console.example.net")
    assert size > 18_000_000
    write_export(api_file, domain="api.example.net")
    client = signed_in_client(base_url)

    # The console: upload (streamed from disk by the client), preview, import in the background.
    tracemalloc.start()
    try:
        with console_file.open("rb") as stream:
            shown = client.post(
                "/admin/import/preview",
                data={"csrf": csrf(client), "format": ""},
                files={"file": ("members_export.csv", stream, "text/csv")},
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shown.status_code == 200, shown.text[:500]
    # The whole file is never in the server's memory: a few MB of chunks, not 18 MB (let alone two copies).
    assert peak < size / 3, f"peak {peak:,} bytes while receiving {size:,}"
    assert f"{MEMBERS:,} rows after the header" in shown.text
    upload_id = re.search(r'name="upload" value="([^"]+)"', shown.text)
    assert upload_id
    started = client.post(
        "/admin/import/run",
        data={"csrf": csrf(client), "upload": upload_id.group(1), "format": "", "map_email": "Email Address"},
    )
    assert started.status_code == 303, started.text[:300]
    job_page = started.headers["location"]
    assert re.fullmatch(r"/admin/import/jobs/[\w-]+", job_page)
    seen = follow(client, job_page + ".json")
    assert seen[-1]["state"] == "finished", seen[-1]
    assert seen[-1]["done"] == seen[-1]["total"] == MEMBERS
    assert [s["done"] for s in seen] == sorted(s["done"] for s in seen)  # progress only moves forward
    assert seen[-1]["result"]["added"] == MEMBERS and seen[-1]["result"]["invalid"] == 0
    page = client.get(job_page).text
    assert f"{MEMBERS:,} added" in page and f'value="{MEMBERS}"' in page
    assert (
        service.store.subscribers.find_subscriber(f"member{MEMBERS - 1:06}@console.example.net") is not None
    )

    # The API: the body streamed from disk; 202 at once, then the job to poll.
    made = client.post("/admin/tokens/new", data={"csrf": csrf(client, "/admin/tokens"), "name": "import"})
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}", "Content-Type": "text/csv"}
    with api_file.open("rb") as stream:
        accepted = httpx.post(base_url + "/api/v1/import", content=stream, headers=auth, timeout=120)
    assert accepted.status_code == 202, accepted.text
    job_url = accepted.headers["location"]
    assert job_url == f"/api/v1/import/{accepted.json()['id']}"
    api = httpx.Client(base_url=base_url, headers=auth)
    seen = follow(api, job_url)
    assert seen[-1]["state"] == "finished" and seen[-1]["done"] == seen[-1]["total"] == MEMBERS
    assert seen[-1]["result"]["added"] == MEMBERS
    assert service.store.subscribers.find_subscriber(f"member{MEMBERS - 1:06}@api.example.net") is not None
    audits = [e for e in service.store.accounts.audit_entries() if e.action == "readers.import"]
    assert len(audits) == 2 and all(f"{MEMBERS:,} added" in e.detail for e in audits)
    # Both uploads are gone from the server's disk once imported.
    assert list(app.state.console.uploads.directory.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        "email,name\r\na@example.org,A\r\nb@example.org,B\r\nc@example.org,C\r\n",
        "email,name\na@example.org,A\nb@example.org,B\nc@example.org,C",  # no newline at the end
        "email,name\na@example.org,A\n\nb@example.org,B\nc@example.org,C\n\n",  # blank lines are not rows
        'email,name\na@example.org,"A\nline two"\nb@example.org,B\nc@example.org,C\n',  # a quoted break
    ],
    ids=["crlf", "no-final-newline", "blank-lines", "quoted-break"],
)
def test_the_preview_counts_every_row_after_the_header(signed_in: Any, content: str) -> None:
    shown = upload(signed_in("editor"), content, name="three.csv")
    assert shown.status_code == 200, shown.text
    assert "<strong>three.csv</strong>: 3 rows after the header" in shown.text
    # The sample rows name the line each record starts on.
    lines = re.findall(r"<tr><td>(\d+)</td><td>[abc]@example.org", shown.text)
    assert lines[0] == "2" and len(lines) == 3


def test_uploads_that_are_not_utf8_or_too_large_leave_nothing_on_disk(
    signed_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newsletter.admin.context as context

    console = signed_in("editor")
    directory = console.app.state.console.uploads.directory
    refused = console.client.post(
        "/admin/import/preview",
        data={"csrf": console.csrf("/admin/import")},
        files={"file": ("latin.csv", "email,name\r\nzoë@example.org,Zoë\r\n".encode("latin-1"), "text/csv")},
        headers=ORIGIN,
    )
    assert refused.status_code == 400 and "is not UTF-8 text" in refused.text
    monkeypatch.setattr(context, "MAX_UPLOAD", 10_000)  # the cap, made small enough to pass in a test
    big = ("email\r\n" + "".join(f"r{i}@example.org\r\n" for i in range(2000))).encode()
    form = httpx.Request(
        "POST",
        "http://testserver/admin/import/preview",
        data={"csrf": console.csrf("/admin/import")},
        files={"file": ("big.csv", big, "text/csv")},
    )
    body = form.read()
    declared = console.client.post(
        "/admin/import/preview",
        content=body,
        headers={**ORIGIN, "Content-Type": form.headers["content-type"]},
    )
    # Without a length (chunked), the cap is met while reading.
    streamed = console.client.post(
        "/admin/import/preview",
        content=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
        headers={**ORIGIN, "Content-Type": form.headers["content-type"]},
    )
    for refused in (declared, streamed):
        assert refused.status_code == 413 and "larger than" in refused.text
    assert list(directory.iterdir()) == []


def test_the_import_page_follows_an_18_mb_import_in_a_real_browser_to_the_end(
    live: tuple[str, Service, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from .test_admin_browser import CHROMIUM, CHROMIUM_ARGS
    from .test_admin_contrast import SCREENS

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium (/usr/bin/chromium) is not installed")
    base_url, service, _app = live
    export = tmp_path / "members_export.csv"
    assert write_export(export, domain="browser.example.net") > 18_000_000
    SCREENS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(base_url + "/admin/login")
            page.get_by_label("Email").fill("editor@console.example.org")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.goto(base_url + "/admin/import")
            page.get_by_label("CSV file").set_input_files(str(export))
            page.get_by_role("button", name="Preview the columns").click()
            expect(page.get_by_text(f"{MEMBERS:,} rows after the header")).to_be_visible(timeout=60_000)
            page.get_by_role("button", name="Import", exact=True).click()
            bar = page.locator("#import-progress")
            expect(bar).to_have_attribute("max", str(MEMBERS))
            page.screenshot(path=str(SCREENS / "import-running-1000.png"))
            expect(page.get_by_role("status")).to_contain_text(f"{MEMBERS:,} added", timeout=120_000)
            expect(bar).to_have_attribute("value", str(MEMBERS))
            page.screenshot(path=str(SCREENS / "import-finished-1000.png"))
        finally:
            browser.close()
    assert service.store.subscribers.find_subscriber(f"member{MEMBERS - 1:06}@browser.example.net")
