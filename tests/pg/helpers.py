"""Helpers for the PostgreSQL tests: bulk subscribers, a planned-but-unsent edition, subprocess env.

Everything here drives the real service objects against a real PostgreSQL database;
the only shortcut is inserting subscribers with one multi-row INSERT (setup speed).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from newsletter.models import Edition, EditionStatus, SubscriberStatus
from newsletter.service import Service
from newsletter.storage.schema import deliveries, subscribers

NEWSLETTER = [sys.executable, "-m", "newsletter"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def bulk_subscribers(service: Service, count: int, *, domain: str = "example.org") -> None:
    """Insert ``count`` active subscribers (all topics) in a few multi-row INSERTs."""
    now = datetime.now(timezone.utc)
    rows = [
        {
            "email": f"reader{i:06d}@{domain}",
            "name": f"Reader {i}",
            "status": SubscriberStatus.ACTIVE.value,
            "topics": [],
            "cadence": "daily",
            "paused": False,
            "created_at": now,
            "confirmed_at": now,
            "updated_at": now,
            "status_reason": "",
        }
        for i in range(count)
    ]
    with service.store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(subscribers.insert(), rows[start : start + 5000])


def plan_only(service: Service, key: str, *, as_of: datetime | None = None) -> Edition:
    """Plan an edition and leave every row pending, the edition 'sending', for workers to drain."""
    result = service.runner.run(key=key, as_of=as_of, send=False)
    assert result.created and result.edition.status is EditionStatus.SENDING
    assert result.edition.counts.get("pending", 0) > 0
    return result.edition


def claimed_by_counts(service: Service, edition_id: int) -> Counter[str]:
    with service.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.claimed_by, sa.func.count()).where(deliveries.c.edition_id == edition_id).group_by(deliveries.c.claimed_by)
        ).all()
    return Counter({(by or ""): int(n) for by, n in rows})


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """The parent's environment without its NEWSLETTER_* variables, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    base.update(env)
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + base.get("PYTHONPATH", "")
    return base
