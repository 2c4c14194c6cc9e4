"""`newsletter serve`: the secret key rule, and the scheduler's place in the lifespan."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter.cli.serve import serve_command
from newsletter.errors import ConfigError, TokenError
from newsletter.service import Service
from newsletter.web.app import create_app
from tests.factories import SECRET_KEY
from tests.servers import free_port

from .helpers import make_settings


def test_serve_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    result = CliRunner().invoke(
        serve_command, [], env={"NEWSLETTER_CONFIG": str(config), "NEWSLETTER_SECRET_KEY": None}
    )
    assert result.exit_code != 0
    assert "NEWSLETTER_SECRET_KEY is not set" in result.output and "--dev" in result.output


def test_serve_help_documents_dev_and_no_scheduler() -> None:
    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0 and "--dev" in result.output and "--no-scheduler" in result.output


def test_create_app_without_a_key_fails_at_once_unless_dev(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, smtp_port=1).replace("site", secret_key="")
    with pytest.raises(TokenError):
        create_app(Service(settings))
    app = create_app(Service(settings, dev_key=True), dev=True)
    with TestClient(app) as client:
        assert "Development instance" in client.get("/").text


def test_lifespan_starts_and_stops_the_real_scheduler_when_asked(tmp_path: Path) -> None:
    service = Service(make_settings(tmp_path, smtp_port=1))
    plain = create_app(service, scheduler=False)
    with TestClient(plain):
        assert plain.state.scheduler is None
    app = create_app(service, scheduler=True)
    with TestClient(app) as client:
        handle = app.state.scheduler
        assert handle.scheduler.running
        assert handle.next_run_times() and all(when is not None for when in handle.next_run_times().values())
        assert client.get("/").status_code == 200
    assert not handle.scheduler.running


def test_a_bad_schedule_stops_the_app_from_starting_instead_of_serving_without_schedules(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, smtp_port=1).replace("schedule", daily="not a cron line")
    with pytest.raises(ConfigError, match=r"schedule\.daily"):
        with TestClient(create_app(Service(settings), scheduler=True)):
            pass


def test_serve_dev_answers_http_and_warns_about_the_per_run_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import threading

    import httpx

    port = free_port()
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        {
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
            "NEWSLETTER_SITE_BASE_URL": f"http://127.0.0.1:{port}",
        }
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--config",
            str(config),
            "serve",
            "--dev",
            "--no-scheduler",
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Uvicorn running on" in line or "Application startup complete" in line:
                ready.set()
        ready.set()  # the process ended: let the test see why

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(30), "serve did not start within 30 s"
        assert process.poll() is None, "".join(lines)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "Development instance" in page.text
        assert any("per-run key" in line for line in lines)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_real_scheduler_starts_and_stops_with_the_app(tmp_path: Path) -> None:
    service = Service(make_settings(tmp_path, smtp_port=1))
    with TestClient(create_app(service, scheduler=True)) as client:
        assert client.get("/").status_code == 200
        jobs = client.app.state.scheduler.scheduler.get_jobs()  # type: ignore[attr-defined]
        assert {job.id for job in jobs} >= {"edition:daily", "edition:weekly"}, "the scheduler has its jobs"
    service.close()


def test_serve_reports_a_bad_schedule_as_one_line(tmp_path: Path) -> None:
    pytest.importorskip("newsletter.scheduling.schedules")
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    env = {
        "NEWSLETTER_CONFIG": str(config),
        "NEWSLETTER_SECRET_KEY": SECRET_KEY,
        "NEWSLETTER_SCHEDULE_DAILY": "not a cron",
    }
    result = CliRunner().invoke(serve_command, [], env=env)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "schedule" in result.output.lower()
