"""The console's operations end to end over HTTP (Starlette's TestClient), on the real engine and sink."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from newsletter.models import EditionStatus
from newsletter.sink.faults import FaultRule
from tests.servers import wait_until

from .helpers import ORIGIN, Operator


def test_preview_lists_each_report_with_its_reason_at_600_and_375(signed_in: Any) -> None:
    console = signed_in("editor")
    page = console.client.get("/admin/preview", params={"email": "ana@example.org"})
    assert page.status_code == 200
    assert "first digest" in page.text.lower() or "new since" in page.text.lower()
    assert 'class="w600"' in page.text and 'class="w375"' in page.text
    frame = console.client.get("/admin/preview/frame", params={"email": "ana@example.org"})
    assert frame.status_code == 200 and "<html" in frame.text.lower()
    assert "frame-ancestors 'self'" in frame.headers["content-security-policy"]
    unknown = console.client.get("/admin/preview", params={"email": "nobody@example.org"})
    assert "is not a subscriber" in unknown.text


def test_send_a_test_to_me_arrives_in_the_sink_without_the_readers_personal_links(
    signed_in: Any, sink: Any
) -> None:
    console = signed_in("editor")
    r = console.post(
        "/admin/preview/test", {"email": "ana@example.org"}, csrf_from="/admin/preview?email=ana@example.org"
    )
    assert r.status_code == 303 and "sent=1" in r.headers["location"]
    [message] = sink.wait_for(to="editor@console.example.org", timeout=5)
    mail = message.as_email()
    assert str(mail["Subject"]).startswith("[Test] ")
    body = mail.get_body(preferencelist=("plain",)).get_content()
    token = str(mail["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
    assert console.service.signer.is_test(token) and f"/preferences/{token}" in body  # test links only
    assert sink.messages(to="ana@example.org") == []
    assert console.service.store.editions.list_editions() == []  # a test is not an edition
    assert any(
        e.action == "preview.test-send" and e.target == "ana@example.org"
        for e in console.service.store.accounts.audit_entries()
    )


def test_send_now_states_the_reader_count_and_refuses_a_stale_confirmation(signed_in: Any, sink: Any) -> None:
    console = signed_in("editor")
    confirm = console.client.get("/admin/send", params={"schedule": "manual"})
    assert "3 readers" in confirm.text
    refused = console.post(
        "/admin/send", {"schedule": "manual", "confirm_count": "2"}, csrf_from="/admin/send?schedule=manual"
    )
    assert refused.status_code == 409 and console.service.store.editions.list_editions() == []
    r = console.post(
        "/admin/send", {"schedule": "manual", "confirm_count": "3"}, csrf_from="/admin/send?schedule=manual"
    )
    assert r.status_code == 303
    edition_id = int(r.headers["location"].rsplit("/", 1)[1])
    console.engine.wait_idle()
    edition = console.service.store.editions.get_edition(edition_id)
    assert edition.status is EditionStatus.SENT and edition.counts == {"sent": 3}
    for reader in ("ana@example.org", "ben@example.org", "cy@example.org"):
        assert len(sink.wait_for(to=reader, timeout=5)) == 1
    progress = console.client.get("/admin/progress.json", params={"id": str(edition_id)}).json()
    assert progress["editions"][0]["counts"] == {"sent": 3} and progress["editions"][0]["done"] == 3


def test_pause_stops_a_running_send_and_resume_finishes_it_without_duplicates(
    make_service: Any, sink: Any
) -> None:
    from starlette.testclient import TestClient

    from newsletter.admin.app import create_console

    from .helpers import make_users

    service = make_service(NEWSLETTER_SMTP_CONNECTIONS="1", NEWSLETTER_DELIVERY_BATCH_SIZE="5")
    service.runner.ingest()
    readers = [f"reader{i:02}@example.org" for i in range(40)]
    for email in readers:
        service.store.subscribers.add_subscriber(email=email)
    make_users(service)
    sink.faults.add(FaultRule(stage="data", action="delay", delay=0.05))
    app = create_console(service, dev=True)
    with TestClient(app, follow_redirects=False) as client:
        console = Operator(service, app, client)
        console.login("editor@console.example.org")
        r = console.post("/admin/send", {"schedule": "manual", "confirm_count": "40"})
        edition_id = int(r.headers["location"].rsplit("/", 1)[1])
        wait_until(lambda: service.store.editions.get_edition(edition_id).counts.get("sent", 0) >= 3)
        assert (
            console.post(
                f"/admin/editions/{edition_id}/pause", csrf_from=f"/admin/editions/{edition_id}"
            ).status_code
            == 303
        )
        console.engine.wait_idle()
        paused = service.store.editions.get_edition(edition_id)
        assert paused.status is EditionStatus.PAUSED and "editor@console.example.org" in paused.reason
        assert 0 < paused.counts.get("sent", 0) < 40 and paused.counts.get("sending", 0) == 0
        time.sleep(0.5)
        assert (
            service.store.editions.get_edition(edition_id).counts == paused.counts
        )  # nothing moves while paused
        page = console.client.get(f"/admin/editions/{edition_id}")
        assert "Resume" in page.text
        assert (
            f'action="/admin/editions/{edition_id}/resume"' in console.client.get("/admin/").text
        )  # from the dashboard too
        assert (
            console.post(
                f"/admin/editions/{edition_id}/resume", csrf_from=f"/admin/editions/{edition_id}"
            ).status_code
            == 303
        )
        wait_until(
            lambda: service.store.editions.get_edition(edition_id).status is EditionStatus.SENT, timeout=30
        )
        console.engine.wait_idle()
    delivered = Counter(
        m.envelope_rcpt[0] if hasattr(m, "envelope_rcpt") else str(m.as_email()["To"])
        for m in sink.messages()
    )
    assert sorted(delivered) == readers and set(delivered.values()) == {1}
    actions = [e.action for e in service.store.accounts.audit_entries()]
    assert "edition.pause" in actions and "edition.resume" in actions


def test_readers_search_paging_reactivate_and_remove(signed_in: Any) -> None:
    console = signed_in("editor")
    store = console.service.store
    for i in range(55):
        store.subscribers.add_subscriber(email=f"many{i:02}@example.org")
    first = console.client.get("/admin/readers", params={"q": "many"})
    assert "55 readers match" in first.text and 'rel="next"' in first.text
    second = console.client.get("/admin/readers", params={"q": "many", "page": "2"})
    assert "many54@example.org" in second.text and "many00@example.org" not in second.text
    from newsletter.models import SubscriberStatus

    ben = store.subscribers.find_subscriber("ben@example.org")
    store.subscribers.set_status(ben.id, SubscriberStatus.BOUNCED, reason="hard bounce")
    assert (
        console.post(f"/admin/readers/{ben.id}/reactivate", csrf_from=f"/admin/readers/{ben.id}").status_code
        == 303
    )
    assert store.subscribers.get_subscriber(ben.id).status is SubscriberStatus.ACTIVE
    page = console.client.get(f"/admin/readers/{ben.id}")
    assert "reader.reactivate" in page.text  # the reader's audit trail
    wrong = console.post(
        f"/admin/readers/{ben.id}/remove",
        {"confirm": "someone@else.org"},
        csrf_from=f"/admin/readers/{ben.id}",
    )
    assert wrong.status_code == 409 and store.subscribers.get_subscriber(ben.id) is not None
    assert (
        console.post(
            f"/admin/readers/{ben.id}/remove",
            {"confirm": "ben@example.org"},
            csrf_from=f"/admin/readers/{ben.id}",
        ).status_code
        == 303
    )
    assert store.subscribers.get_subscriber(ben.id) is None


def test_edition_page_shows_variants_as_the_reader_saw_them_rows_by_state_and_the_archive(
    signed_in: Any, sink: Any
) -> None:
    console = signed_in("editor")
    console.post(
        "/admin/send", {"schedule": "manual", "confirm_count": "3"}, csrf_from="/admin/send?schedule=manual"
    )
    console.engine.wait_idle()
    [edition] = console.service.store.editions.list_editions()
    page = console.client.get(f"/admin/editions/{edition.id}")
    variant = re.search(rf'href="/admin/editions/{edition.id}/variants/(\d+)"', page.text)
    assert variant and "/archive" in page.text
    frame = console.client.get(f"/admin/editions/{edition.id}/variants/{variant.group(1)}/frame")
    assert frame.status_code == 200 and "<html" in frame.text.lower()
    rows = console.client.get(f"/admin/editions/{edition.id}", params={"state": "sent"})
    assert rows.text.count("@example.org</td><td>sent</td>") == 3
    none_failed = console.client.get(f"/admin/editions/{edition.id}", params={"state": "failed"})
    assert "No rows in state failed" in none_failed.text


def test_api_lists_pages_and_sends_with_a_confirmed_count(signed_in: Any, sink: Any) -> None:
    console = signed_in("editor")
    made = console.post("/admin/tokens/new", {"name": "ci"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    api = console.client
    created = api.post("/api/v1/readers", json={"email": "Dee@Example.org", "topics": []}, headers=auth)
    assert created.status_code == 201 and created.json()["email"] == "dee@example.org"
    assert api.post("/api/v1/readers", json={"email": "not an address"}, headers=auth).status_code == 400
    assert api.post("/api/v1/readers", json={"nope": 1}, headers=auth).status_code == 422
    page = api.get("/api/v1/readers", params={"per_page": 2, "page": 2}, headers=auth).json()
    assert page["total"] == 4 and page["pages"] == 2 and len(page["items"]) == 2
    assert api.get("/api/v1/readers", params={"per_page": 1000}, headers=auth).status_code == 422
    audience = api.get("/api/v1/send/audience", params={"schedule": "manual"}, headers=auth).json()
    assert audience["readers"] == 4
    assert (
        api.post("/api/v1/send", json={"schedule": "manual", "confirm_count": 3}, headers=auth).status_code
        == 409
    )
    started = api.post("/api/v1/send", json={"schedule": "manual", "confirm_count": 4}, headers=auth)
    assert started.status_code == 202
    console.engine.wait_idle()
    editions = api.get("/api/v1/editions", headers=auth).json()
    assert editions["items"][0]["counts"] == {"sent": 4}
    detail = api.get(f"/api/v1/editions/{started.json()['id']}", headers=auth).json()
    assert detail["status"] == "sent" and len(detail["variants"]) >= 1
    dee = created.json()["id"]
    changed = api.patch(f"/api/v1/readers/{dee}", json={"cadence": "weekly", "paused": True}, headers=auth)
    assert (
        changed.status_code == 200
        and changed.json()["cadence"] == "weekly"
        and changed.json()["paused"] is True
    )
    assert api.patch(f"/api/v1/readers/{dee}", json={"cadence": "hourly"}, headers=auth).status_code == 422
    preview = api.get("/api/v1/preview", params={"email": "ana@example.org"}, headers=auth).json()
    assert preview["email"] == "ana@example.org"
    assert api.post("/api/v1/test-send", json={"email": "ana@example.org"}, headers=auth).status_code in (
        200,
        400,
    )


def test_openapi_document_and_docs_need_a_token_or_session(signed_in: Any, console: Operator) -> None:
    assert console.client.get("/api/v1/openapi.json").status_code == 303
    console = signed_in("viewer")
    doc = console.client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/api/v1/editions",
        "/api/v1/readers",
        "/api/v1/send",
        "/api/v1/test-send",
        "/api/v1/preview",
    } <= set(doc["paths"])
    assert not any(path.startswith("/admin") for path in doc["paths"])
    assert "token" in doc["components"]["securitySchemes"]
    docs = console.client.get("/api/v1/docs")
    assert docs.status_code == 200 and "/api/v1/openapi.json" in docs.text
    assert ORIGIN  # the docs page posts nothing


def test_reader_edit_and_export_are_audited(signed_in: Any) -> None:
    console = signed_in("editor")
    store = console.service.store
    ana = store.subscribers.find_subscriber("ana@example.org")
    r = console.post(
        f"/admin/readers/{ana.id}/edit",
        {"topics": "Access Control; Cameras", "cadence": "weekly", "paused": "1"},
        csrf_from=f"/admin/readers/{ana.id}",
    )
    assert r.status_code == 303
    fresh = store.subscribers.get_subscriber(ana.id)
    assert (
        fresh.cadence.value == "weekly"
        and fresh.paused
        and set(fresh.topics) == {"Access Control", "Cameras"}
    )
    bad = console.post(
        f"/admin/readers/{ana.id}/edit", {"cadence": "hourly"}, csrf_from=f"/admin/readers/{ana.id}"
    )
    assert bad.status_code == 400 and store.subscribers.get_subscriber(ana.id).cadence.value == "weekly"
    export = console.client.get("/admin/readers/export.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert export.text.splitlines()[0].startswith("email,") and "ben@example.org" in export.text
    actions = {(e.action, e.target) for e in store.accounts.audit_entries()}
    assert ("reader.edit", "ana@example.org") in actions and ("readers.export", "") in actions


def test_admin_sees_settings_without_secrets_and_checks_the_suppression_list(signed_in: Any) -> None:
    from newsletter.models import SubscriberStatus
    from tests.factories import SECRET_KEY

    console = signed_in("admin")
    settings = console.client.get("/admin/settings")
    assert settings.status_code == 200 and "admin.session_idle" in settings.text
    assert SECRET_KEY not in settings.text and "(set)" in settings.text
    console.service.store.suppressions.suppress(
        "gone@example.org", SubscriberStatus.BOUNCED, reason="hard bounce"
    )
    found = console.client.get("/admin/suppressions", params={"email": "gone@example.org"})
    assert "is suppressed (bounced)" in found.text
    assert (
        "is not on the suppression list"
        in console.client.get("/admin/suppressions", params={"email": "ana@example.org"}).text
    )
    console.login("editor@console.example.org")
    assert console.client.get("/admin/settings").status_code == 403
    assert console.client.get("/admin/suppressions").status_code == 403


def test_admin_adds_users_and_changes_roles_but_never_removes_the_last_admin(signed_in: Any) -> None:
    console = signed_in("admin")
    accounts = console.service.store.accounts
    assert (
        console.post(
            "/admin/users/new",
            {"email": "new.editor@example.org", "role": "editor", "password": "another long passphrase"},
            csrf_from="/admin/users",
        ).status_code
        == 303
    )
    new = accounts.find_user("new.editor@example.org")
    assert new is not None and new.role == "editor" and "another long passphrase" not in new.password_hash
    assert (
        console.post(
            "/admin/users/new",
            {"email": "x@example.org", "role": "editor", "password": "short"},
            csrf_from="/admin/users",
        ).status_code
        == 400
    )
    assert (
        console.post(f"/admin/users/{new.id}/role", {"role": "viewer"}, csrf_from="/admin/users").status_code
        == 303
    )
    assert accounts.find_user("new.editor@example.org").role == "viewer"
    me = accounts.find_user("admin@console.example.org")
    last = console.post(f"/admin/users/{me.id}/role", {"role": "viewer"}, csrf_from="/admin/users")
    assert last.status_code == 400 and "last admin" in last.text and accounts.get_user(me.id).role == "admin"
    actions = [(e.action, e.target) for e in accounts.audit_entries()]
    assert ("user.create", "new.editor@example.org") in actions and (
        "user.role",
        "new.editor@example.org",
    ) in actions
    console.login("editor@console.example.org")
    assert (
        console.post(
            "/admin/users/new",
            {"email": "y@example.org", "role": "admin", "password": "another long passphrase"},
            csrf_from="/admin/",
        ).status_code
        == 403
    )


def test_send_now_while_another_send_of_the_schedule_runs_says_so_at_once(signed_in: Any) -> None:
    from newsletter.editions.lock import hold_send_lock

    console = signed_in("editor")
    store = console.service.store
    with hold_send_lock(store.locks, "manual"):
        started = time.monotonic()
        r = console.post(
            "/admin/send",
            {"schedule": "manual", "confirm_count": "3"},
            csrf_from="/admin/send?schedule=manual",
        )
        assert r.status_code == 400 and "another send" in r.text.lower()
        assert (
            time.monotonic() - started < 5
        )  # the refusal, not a 10-second wait for an edition that never starts
    assert store.editions.list_editions() == []
