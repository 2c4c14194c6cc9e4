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
from newsletter.store import deliveries, subscribers

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
    """Plan an edition and leave every row pending, the edition 'sending', for workers to drain.

    There is no public planning-only entry point in EditionRunner (``run`` plans and
    sends in one go), so this uses the runner's own steps: create the edition, ingest
    the feed, ``_write_outbox`` (the streamed planner ``run`` uses), then mark it sending
    as ``_plan_and_send`` does before it starts the sender.
    """
    runner = service.runner
    store = service.store
    edition, created = store.create_edition(key=key, schedule="manual", as_of=as_of or runner.clock(), now=runner.clock())
    assert created
    runner.ingest()
    written = runner._write_outbox(edition, cadences=None)
    assert written > 0
    store.set_edition_status(edition.id, EditionStatus.SENDING, reason="", now=runner.clock())
    fresh = store.get_edition(edition.id)
    assert fresh is not None
    return fresh


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
