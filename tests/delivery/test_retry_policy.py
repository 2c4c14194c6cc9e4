"""The one retry policy: read from the configuration in one place, its answers for each sender."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.delivery.retry import PAUSE_FLOOR, RetryPolicy
from newsletter.errors import ConfigError

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_local_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(var)


def test_the_existing_keys_configure_it():
    settings = load_settings(
        env={
            "NEWSLETTER_DELIVERY_BACKOFF": "60, 120",
            "NEWSLETTER_DELIVERY_MAX_AGE": "3600",
            "NEWSLETTER_DELIVERY_RETRY_DELAY": "0.5",
            "NEWSLETTER_DELIVERY_RETRY_DELAY_MAX": "4",
            "NEWSLETTER_SMTP_RETRIES": "2",
            "NEWSLETTER_WEB_MAIL_BACKOFF": "5",
        }
    )
    policy = RetryPolicy.from_settings(settings)
    assert policy == RetryPolicy(
        backoff=(60, 120),
        max_age=timedelta(hours=1),
        pause_first=0.5,
        pause_max=4.0,
        reconnects=2,
        mail_backoff=(5,),
    )
    assert RetryPolicy.from_settings(load_settings(env={})) == RetryPolicy(), "the defaults agree"


def test_a_refused_row_waits_the_step_of_its_attempt_the_last_one_repeating():
    policy = RetryPolicy(backoff=(300, 900, 3600))
    assert [policy.next_attempt(n, NOW) - NOW for n in (0, 1, 2, 3, 4, 9)] == [
        timedelta(seconds=s) for s in (300, 300, 900, 3600, 3600, 3600)
    ]


def test_a_row_gives_up_only_when_its_next_attempt_passes_max_age():
    policy = RetryPolicy(max_age=timedelta(hours=1))
    limit = policy.give_up_after(NOW)
    assert limit == NOW + timedelta(hours=1)
    assert not policy.gives_up(limit, limit)
    assert policy.gives_up(limit + timedelta(seconds=1), limit)
    assert not policy.gives_up(NOW + timedelta(days=9), None)


def test_a_refused_connection_pauses_doubling_up_to_the_cap():
    policy = RetryPolicy(pause_first=1.0, pause_max=30.0)
    assert [policy.pause(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.pause(10_000) == 30.0, "no overflow however long the pool stays shrunk"
    assert RetryPolicy(pause_first=0.0).pause(0) == PAUSE_FLOOR, "a parked connection never spins"


def test_a_web_mail_is_retried_on_its_own_schedule_then_dropped():
    policy = RetryPolicy(mail_backoff=(10, 60))
    assert policy.mail_retry_at(1, NOW) == NOW + timedelta(seconds=10)
    assert policy.mail_retry_at(2, NOW) == NOW + timedelta(seconds=60)
    assert policy.mail_retry_at(3, NOW) is None


@pytest.mark.parametrize(
    "env, key",
    [
        ({"NEWSLETTER_DELIVERY_BACKOFF": "soon"}, "delivery.backoff"),
        ({"NEWSLETTER_DELIVERY_BACKOFF": "60,0"}, "delivery.backoff"),
        ({"NEWSLETTER_WEB_MAIL_BACKOFF": ""}, "web.mail_backoff"),
        ({"NEWSLETTER_WEB_MAIL_BACKOFF": "10,-5"}, "web.mail_backoff"),
        ({"NEWSLETTER_DELIVERY_RETRY_DELAY": "60"}, "delivery.retry_delay"),  # above retry_delay_max
        ({"NEWSLETTER_DELIVERY_RETRY_DELAY": "-1"}, "delivery.retry_delay"),
    ],
)
def test_a_bad_schedule_is_refused_at_load_naming_the_key(env, key):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env=env)
    assert key in excinfo.value.message and "\n" not in excinfo.value.message
