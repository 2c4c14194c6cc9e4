"""The console's security rules, each as a named regression test:
sessions, CSRF, origin, lockout, roles, secrets."""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter.admin.accounts import LOCK_AFTER, digest
from newsletter.admin.app import create_console
from newsletter.cli import main
from newsletter.service import Service
from tests.factories import FakeClock, utc

from .helpers import ORIGIN, PASSWORD, Operator, make_users

PAGES = [
    "/admin/",
    "/admin/editions",
    "/admin/readers",
    "/admin/preview",
    "/admin/send",
    "/admin/tokens",
    "/admin/audit",
    "/admin/users",
    "/admin/progress.json",
]
FORMS = [
    "/admin/send",
    "/admin/readers/add",
    "/admin/preview/test",
    "/admin/tokens/new",
    "/admin/logout",
    "/admin/editions/1/pause",
    "/admin/readers/1/reactivate",
]
API_GETS = [
    "/api/v1/editions",
    "/api/v1/editions/1",
    "/api/v1/readers",
    "/api/v1/readers/1",
    "/api/v1/preview?email=ana@example.org",
    "/api/v1/send/audience?schedule=manual",
]
API_POSTS = [
    "/api/v1/send",
    "/api/v1/test-send",
    "/api/v1/readers",
    "/api/v1/editions/1/pause",
    "/api/v1/editions/1/resume",
    "/api/v1/readers/1/reactivate",
]


def test_console_is_off_until_a_first_user_exists(make_service: Any) -> None:
    service = make_service()
    with TestClient(create_console(service, dev=True), follow_redirects=False) as client:
        assert client.get("/admin/login").status_code == 404
        assert "create-user" in client.get("/admin/").text
        make_users(service)
        assert client.get("/admin/login").status_code == 200


def test_no_page_form_or_api_call_without_a_session_or_token(console: Operator) -> None:
    for path in PAGES:
        r = console.client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/admin/login", path
    for path in FORMS:
        assert console.client.post(path, data={"csrf": "x"}, headers=ORIGIN).status_code == 401, path
    for path in API_GETS:
        assert console.client.get(path).status_code == 401, path
    for path in API_POSTS:
        assert console.client.post(path, json={}).status_code == 401, path
    assert (
        console.client.get("/api/v1/editions", headers={"Authorization": "Bearer nlk_forged"}).status_code
        == 401
    )


def test_api_ignores_the_console_session_cookie(console: Operator) -> None:
    """A signed-in browser cannot be made to call the API cross-site: the API reads tokens, never cookies."""
    console.login("admin@console.example.org")
    assert console.client.get("/admin/").status_code == 200
    assert console.client.post("/api/v1/readers", json={"email": "x@example.org"}).status_code == 401


def test_viewer_cannot_send_preview_or_change_readers(signed_in: Any) -> None:
    console = signed_in("viewer")
    assert console.client.get("/admin/").status_code == 200
    assert console.client.get("/admin/send").status_code == 403
    assert console.client.get("/admin/preview?email=ana@example.org").status_code == 403
    for path, data in (
        ("/admin/send", {"schedule": "manual", "confirm_count": "3"}),
        ("/admin/readers/add", {"email": "new@example.org"}),
    ):
        assert console.post(path, data).status_code == 403
    assert console.service.store.editions.list_editions() == []
    assert console.service.store.subscribers.find_subscriber("new@example.org") is None


def test_viewer_token_cannot_send_through_the_api(signed_in: Any) -> None:
    console = signed_in("viewer")
    token = re.search(
        r'id="new-token">([^<]+)<',
        console.post("/admin/tokens/new", {"name": "ci"}, csrf_from="/admin/tokens").text,
    )
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    assert console.client.get("/api/v1/editions", headers=auth).status_code == 200
    r = console.client.post("/api/v1/send", json={"schedule": "manual", "confirm_count": 3}, headers=auth)
    assert r.status_code == 403 and "editor" in r.json()["error"]
    assert console.service.store.editions.list_editions() == []


def test_form_without_its_csrf_token_is_refused(signed_in: Any) -> None:
    console = signed_in("editor")
    for data in ({}, {"csrf": "forged-token"}):
        r = console.client.post(
            "/admin/readers/add", data={"email": "new@example.org", **data}, headers=ORIGIN
        )
        assert r.status_code == 403 and "security token" in r.text
    assert console.service.store.subscribers.find_subscriber("new@example.org") is None
    assert console.post("/admin/readers/add", {"email": "new@example.org"}).status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
        {},
    ],
    ids=["foreign-origin", "null-origin", "foreign-referer", "sec-fetch-cross-site", "no-origin"],
)
def test_cross_site_post_is_refused_even_with_a_valid_csrf_token(
    signed_in: Any, headers: dict[str, str]
) -> None:
    console = signed_in("editor")
    csrf = console.csrf("/admin/readers")
    r = console.client.post(
        "/admin/readers/add", data={"csrf": csrf, "email": "new@example.org"}, headers=headers
    )
    assert r.status_code == 403 and "cross-site" in r.text.lower()
    assert console.service.store.subscribers.find_subscriber("new@example.org") is None


def test_cross_site_login_post_is_refused(console: Operator) -> None:
    page = console.client.get("/admin/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token
    r = console.client.post(
        "/admin/login",
        data={"login_token": token.group(1), "email": "admin@console.example.org", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and console.app.state.console.cookie_name not in r.cookies


def test_login_locks_the_account_after_repeated_wrong_passwords(console: Operator) -> None:
    for _ in range(LOCK_AFTER):
        assert console.login("editor@console.example.org", "wrong password, twelve+").status_code == 401
    r = console.login("editor@console.example.org", PASSWORD)
    assert r.status_code == 401 and "locked" in r.text
    assert console.client.get("/admin/").status_code == 303
    # Other accounts are not affected; an admin sees the failures in the audit log.
    assert console.login("admin@console.example.org").status_code == 303
    audit = console.client.get("/admin/audit").text
    assert audit.count("login.failed") == LOCK_AFTER + 1


def test_login_is_rate_limited_per_client(console: Operator) -> None:
    codes = [
        console.login(f"nobody{i}@example.org", "wrong password, twelve+").status_code for i in range(11)
    ]
    assert codes[:10] == [401] * 10 and codes[10] == 429


def test_session_cookie_is_httponly_strict_and_secure_outside_dev(console_service: Service) -> None:
    make_users(console_service)
    for dev, name, secure in ((True, "nl_console", False), (False, "__Host-nl_console", True)):
        with TestClient(
            create_console(console_service, dev=dev), base_url="https://testserver", follow_redirects=False
        ) as client:
            operator = Operator(console_service, client.app, client)  # type: ignore[arg-type]
            page = client.get("/admin/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token
            r = client.post(
                "/admin/login",
                data={
                    "login_token": token.group(1),
                    "email": "viewer@console.example.org",
                    "password": PASSWORD,
                },
                headers={"Origin": "https://testserver"},
            )
            header = next(v for v in r.headers.get_list("set-cookie") if v.startswith(name + "="))
            flags = {part.strip().lower() for part in header.split(";")}
            assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
            assert ("secure" in flags) is secure
            assert operator.client is client


def test_session_is_rotated_at_login(console: Operator) -> None:
    name = console.app.state.console.cookie_name
    console.login("viewer@console.example.org")
    first = console.client.cookies.get(name)
    console.login("viewer@console.example.org")
    second = console.client.cookies.get(name)
    assert first and second and first != second
    # The session from before the second login is gone, not merely replaced in this browser.
    assert console.service.store.accounts.get_session(digest(first)) is None
    assert console.service.store.accounts.get_session(digest(second)) is not None


def test_session_ends_when_idle(make_service: Any) -> None:
    clock = FakeClock(utc(2026, 11, 30, 9, 0))
    service = make_service(clock=clock)
    make_users(service)
    with TestClient(create_console(service, dev=True), follow_redirects=False) as client:
        operator = Operator(service, client.app, client)  # type: ignore[arg-type]
        assert operator.login("viewer@console.example.org").status_code == 303
        clock.advance(timedelta(seconds=service.settings.admin.session_idle - 60))
        assert client.get("/admin/").status_code == 200  # a request restarts the idle time
        clock.advance(timedelta(seconds=service.settings.admin.session_idle - 60))
        assert client.get("/admin/").status_code == 200
        clock.advance(timedelta(seconds=service.settings.admin.session_idle + 1))
        assert client.get("/admin/").status_code == 303


def test_passwords_and_tokens_never_appear_in_logs_responses_or_the_database(
    console: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "a wrong password that must not leak"
    responses = [
        console.login("admin@console.example.org", wrong),
        console.login("admin@console.example.org"),
    ]
    made = console.post("/admin/tokens/new", {"name": "deploy"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    responses += [
        console.client.get("/api/v1/editions", headers={"Authorization": f"Bearer {token.group(1)}"}),
        console.client.get("/admin/tokens"),
        console.client.get("/admin/audit"),
    ]
    for r in responses:
        assert PASSWORD not in r.text and wrong not in r.text
        assert token.group(1) not in r.text
    assert "$argon2" not in "".join(r.text for r in responses)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (PASSWORD, wrong, token.group(1)):
        assert secret not in logged
    # Stored as hashes only.
    import sqlalchemy as sa

    with console.service.store.engine.connect() as conn:
        dump = "\n".join(
            str(tuple(row))
            for table in ("admin_users", "admin_sessions", "api_tokens", "audit_log")
            for row in conn.execute(sa.text(f"select * from {table}"))
        )
    for secret in (
        PASSWORD,
        wrong,
        token.group(1),
        console.client.cookies.get(console.app.state.console.cookie_name) or "?",
    ):
        assert secret not in dump


def test_api_token_is_shown_once_and_revocation_takes_effect_at_once(signed_in: Any) -> None:
    console = signed_in("editor")
    made = console.post("/admin/tokens/new", {"name": "script"}, csrf_from="/admin/tokens")
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token
    auth = {"Authorization": f"Bearer {token.group(1)}"}
    assert console.client.get("/api/v1/readers", headers=auth).status_code == 200
    listing = console.client.get("/admin/tokens").text
    assert token.group(1) not in listing and token.group(1)[:10] in listing
    token_id = console.service.store.accounts.list_tokens()[0].id
    assert console.post(f"/admin/tokens/{token_id}/revoke", csrf_from="/admin/tokens").status_code == 303
    assert console.client.get("/api/v1/readers", headers=auth).status_code == 401


def test_every_operator_action_is_audited_with_who_and_where(signed_in: Any) -> None:
    console = signed_in("admin")
    console.post("/admin/readers/add", {"email": "new@example.org"}, csrf_from="/admin/readers")
    reader = console.service.store.subscribers.find_subscriber("new@example.org")
    assert reader is not None
    console.post(
        f"/admin/readers/{reader.id}/remove",
        {"confirm": "new@example.org"},
        csrf_from=f"/admin/readers/{reader.id}",
    )
    entries = console.service.store.accounts.audit_entries()
    actions = [(e.actor, e.action, e.target) for e in entries]
    assert ("admin@console.example.org", "reader.add", "new@example.org") in actions
    assert ("admin@console.example.org", "reader.remove", "new@example.org") in actions
    assert ("admin@console.example.org", "login", "") in actions
    assert all(e.client == "testclient" for e in entries)


def test_create_user_reads_the_password_from_stdin_never_an_argument(
    base_env: dict[str, str], tmp_path: Any
) -> None:
    runner = CliRunner()
    env = {**base_env, "NEWSLETTER_CONFIG": str(tmp_path / "empty.toml")}
    (tmp_path / "empty.toml").write_text("")
    r = runner.invoke(
        main, ["admin", "create-user", "Boss@Example.org", "--role", "admin"], input=PASSWORD + "\n", env=env
    )
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    r = runner.invoke(main, ["admin", "create-user", "x@example.org", "--password", PASSWORD], env=env)
    assert r.exit_code == 2  # no such option: a password never goes on the command line
    r = runner.invoke(main, ["admin", "create-user", "short@example.org"], input="short\n", env=env)
    assert (
        r.exit_code == 1
        and "Error: the password must have at least 12 characters" in r.output
        and "Traceback" not in r.output
    )
    r = runner.invoke(main, ["admin", "users"], env=env)
    assert "boss@example.org" in r.output and "admin" in r.output


def test_sign_out_ends_the_session_on_the_server_not_only_in_the_browser(console: Operator) -> None:
    name = console.app.state.console.cookie_name
    console.login("viewer@console.example.org")
    cookie = console.client.cookies.get(name)
    assert cookie and console.post("/admin/logout").status_code == 303
    console.client.cookies.set(name, cookie)  # a copy of the cookie kept by an attacker
    assert console.client.get("/admin/").status_code == 303


def test_same_origin_refuses_every_foreign_or_missing_origin() -> None:
    """Property: a POST is same-origin only when its Origin (or Referer) names exactly the request's host."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from starlette.requests import Request

    from newsletter.admin.security import same_origin

    hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}(:[0-9]{2,5})?", fullmatch=True)

    def request(host: str, headers: dict[str, str]) -> Request:
        raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request(
            {"type": "http", "method": "POST", "path": "/admin/send", "headers": raw, "query_string": b""}
        )

    # Bounded for make test; ADMIN_PROPERTY_EXAMPLES=5000 for a long run.
    @settings(max_examples=int(os.environ.get("ADMIN_PROPERTY_EXAMPLES", "60")), deadline=None)
    @given(
        host=hosts,
        other=hosts,
        scheme=st.sampled_from(["http", "https"]),
        via=st.sampled_from(["origin", "referer"]),
    )
    def check(host: str, other: str, scheme: str, via: str) -> None:
        header = (
            {"Origin": f"{scheme}://{other}"}
            if via == "origin"
            else {"Referer": f"{scheme}://{other}/page?x=1"}
        )
        assert same_origin(request(host, header)) is (other.lower() == host.lower())
        assert same_origin(request(host, {})) is False
        assert same_origin(request(host, {**header, "Sec-Fetch-Site": "cross-site"})) is False

    check()
