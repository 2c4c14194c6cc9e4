"""Helpers for the PostgreSQL tests: a planned-but-unsent edition, who claimed what, subprocess env.

Everything here drives the real service objects against a real PostgreSQL database
(subscribers in bulk come from tests/factories.py).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from newsletter.models import Edition, EditionStatus
from newsletter.service import Service
from newsletter.storage.schema import deliveries

NEWSLETTER = [sys.executable, "-m", "newsletter"]


def plan_only(service: Service, key: str, *, as_of: datetime | None = None) -> Edition:
    """Plan an edition and leave every row pending, the edition 'sending', for workers to drain."""
    result = service.runner.run(key=key, as_of=as_of, send=False)
    assert result.created and result.edition.status is EditionStatus.SENDING
    assert result.edition.counts.get("pending", 0) > 0
    return result.edition


def claimed_by_counts(service: Service, edition_id: int) -> Counter[str]:
    with service.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.claimed_by, sa.func.count())
            .where(deliveries.c.edition_id == edition_id)
            .group_by(deliveries.c.claimed_by)
        ).all()
    return Counter({(by or ""): int(n) for by, n in rows})


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """The parent's environment without its NEWSLETTER_* variables, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    base.update(env)
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + base.get("PYTHONPATH", "")
    return base
