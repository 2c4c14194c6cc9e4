"""Listing benchmark: `subscribers list` at 1,000,000 rows, against the bare query, in one run (by hand).

    .venv/bin/python tests/bench/bench_list.py                  # 1,000,000 subscribers
    .venv/bin/python tests/bench/bench_list.py --rows 100000
    .venv/bin/python tests/bench/bench_list.py --postgresql postgresql+psycopg://postgres@127.0.0.1:5432/empty_db

A fresh SQLite file (or, with ``--postgresql URL``, that empty PostgreSQL database) made by
``Store`` (every index of the schema) is filled with N
subscribers (names, topics and statuses varied; 1 in 10 unsubscribed, 1 in 50 bounced).
Then, for each listing an operator asks for:

(a) baseline: the same page and count with the sqlite3 module (psycopg) on a bare connection
    (``SELECT ... LIMIT 50`` and ``SELECT count(*)`` with the same WHERE);
(b) the command: `newsletter subscribers list ...` run in-process with click's runner
    (settings, the Store, the page, the count, the rich table).

Printed: both times per listing and the ratio (a)/(b); the target is (b) under a second.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from click.testing import CliRunner

from newsletter.cli import main
from newsletter.storage.schema import subscribers
from newsletter.storage.store import Store

LISTINGS: list[tuple[str, list[str], str, tuple[object, ...]]] = [
    ("first page", [], "", ()),
    ("page 10,000", ["--page", "10000"], "", ()),
    ("--status bounced", ["--status", "bounced"], "WHERE status = ?", ("bounced",)),
    (
        "--search reader0999 (address)",
        ["--search", "reader0999"],
        "WHERE email LIKE ? OR lower(name) LIKE ?",
        ("%reader0999%", "%reader0999%"),
    ),
    (
        "--search 'hartley' (name)",
        ["--search", "hartley"],
        "WHERE email LIKE ? OR lower(name) LIKE ?",
        ("%hartley%", "%hartley%"),
    ),
    (
        "--status active --search example.net",
        ["--status", "active", "--search", "example.net"],
        "WHERE status = ? AND (email LIKE ? OR lower(name) LIKE ?)",
        ("active", "%example.net%", "%example.net%"),
    ),
    (
        "--search qv (2 letters: no trigram)",
        ["--search", "qv"],
        "WHERE email LIKE ? OR lower(name) LIKE ?",
        ("%qv%", "%qv%"),
    ),
]
SURNAMES = ("Hartley", "Nunez", "Whitfield", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Silva")


def fill(url: str, rows: int) -> None:
    store = Store(url)
    if store.engine.dialect.name == "postgresql":
        # The same rows, made by the server (a Python loop would take longer than the benchmark).
        surnames = "ARRAY[" + ", ".join(f"'{n}'" for n in SURNAMES) + "]"
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO subscribers (email, name, status, topics, cadence, paused, created_at,"
                " updated_at, confirmed_at, status_reason, legacy_links)"
                " SELECT 'reader' || lpad(i::text, 7, '0') || '@example.' ||"
                " CASE WHEN mod(i, 3) = 0 THEN 'org' ELSE 'net' END,"
                f" 'Reader ' || ({surnames})[mod(i, {len(SURNAMES)}) + 1] || ' ' || i,"
                " CASE WHEN mod(i, 50) = 0 THEN 'bounced'"
                " WHEN mod(i, 10) = 0 THEN 'unsubscribed' ELSE 'active' END,"
                " CASE WHEN mod(i, 4) = 0 THEN '[\"Access Control\"]' ELSE '[]' END::json, 'daily', false,"
                " now(), now(), now(), '', false"
                f" FROM generate_series(0, {rows - 1}) AS i"
            )
            conn.exec_driver_sql("ANALYZE subscribers")
        store.dispose()
        return
    now = datetime(2026, 11, 1, tzinfo=UTC)
    batch = []
    with store.engine.begin() as conn:
        for i in range(rows):
            status = "bounced" if i % 50 == 0 else "unsubscribed" if i % 10 == 0 else "active"
            batch.append(
                {
                    "email": f"reader{i:07d}@example.{'net' if i % 3 else 'org'}",
                    "name": f"Reader {SURNAMES[i % len(SURNAMES)]} {i}",
                    "status": status,
                    "topics": ["Access Control"] if i % 4 == 0 else [],
                    "cadence": "daily",
                    "paused": False,
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now,
                    "status_reason": "",
                    "legacy_links": False,
                }
            )
            if len(batch) == 20_000:
                conn.execute(subscribers.insert(), batch)
                batch.clear()
        if batch:
            conn.execute(subscribers.insert(), batch)
    store.dispose()


def baseline(url: str, where: str, params: tuple[object, ...], offset: int) -> float:
    start = time.perf_counter()
    if url.startswith("postgresql"):
        import psycopg

        where = where.replace("email LIKE", "lower(email) LIKE").replace("?", "%s")
        with psycopg.connect(url.replace("+psycopg", "")) as pg:
            pg.execute(
                f"SELECT * FROM subscribers {where} ORDER BY id LIMIT 50 OFFSET {offset}", params
            ).fetchall()
            pg.execute(f"SELECT count(*) FROM subscribers {where}", params).fetchone()
        return time.perf_counter() - start
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.execute(f"SELECT * FROM subscribers {where} ORDER BY id LIMIT 50 OFFSET {offset}", params).fetchall()
    conn.execute(f"SELECT count(*) FROM subscribers {where}", params).fetchone()
    conn.close()
    return time.perf_counter() - start


def command(url: str, args: list[str]) -> float:
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": url}
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["subscribers", "list", *args], env=env)
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    return elapsed


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        default="",
        help="an empty PostgreSQL database to fill instead of a temporary SQLite file",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.postgresql or f"sqlite:///{Path(tmp) / 'list.sqlite'}"
        start = time.perf_counter()
        fill(db, args.rows)
        print(f"{args.rows:,} subscribers stored in {time.perf_counter() - start:.1f} s")
        command(db, [])  # warm the file cache, as an operator's second command would find it
        print(f"{'listing':40} {'(a) bare query':>15} {'(b) command':>12} {'(a)/(b)':>8}")
        for label, options, where, params in LISTINGS:
            offset = 9_999 * 50 if "--page" in options else 0
            base = min(baseline(db, where, params, offset) for _ in range(3))
            ours = min(command(db, options) for _ in range(3))
            print(
                f"{label:40} {base:13.3f} s {ours:10.3f} s {base / ours:8.2f}"
                + ("" if ours < 1 else "  OVER 1 s")
            )


if __name__ == "__main__":
    main_()
