"""The web app's mail queue retries on the one retry policy (``web.mail_backoff``), then drops."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from newsletter.content.render import template_environment
from newsletter.storage.schema import web_mail_queue
from newsletter.web.mailer import Mailer, MailQueue
from tests.factories import FakeClock, Services, service_env


def test_a_mail_the_relay_did_not_take_is_retried_on_web_mail_backoff_then_dropped(tmp_path: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    clock = FakeClock(datetime.now(UTC))
    env = service_env(tmp_path, smtp_port=dead.getsockname()[1], NEWSLETTER_WEB_MAIL_BACKOFF="7,11")
    services = Services(tmp_path, env, clock=clock)
    try:
        service = services.new()
        settings = service.settings
        env_templates = template_environment(settings.digest.templates)
        mailer = Mailer(settings, env_templates, service.signer, service.store.subscribers, clock=clock)
        queue = MailQueue(mailer, service.store.webmail)
        queue.submit("signup", "patient@example.org")
        started = clock()

        def row() -> sa.Row:
            with service.store.engine.connect() as conn:
                return conn.execute(sa.select(web_mail_queue)).one()

        assert queue.drain_one()
        assert (row().attempts, row().next_attempt_at) == (1, started + timedelta(seconds=7))
        assert not queue.drain_one(), "not due before its retry time"
        clock.advance(timedelta(seconds=7))
        assert queue.drain_one()
        assert (row().attempts, row().next_attempt_at) == (2, started + timedelta(seconds=7 + 11))
        clock.advance(timedelta(seconds=11))
        assert queue.drain_one()
        assert service.store.webmail.waiting() == 0, "dropped after its last retry"
    finally:
        services.close()
        dead.close()
