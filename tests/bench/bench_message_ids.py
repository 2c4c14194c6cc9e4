"""What a Message-ID's shape costs the outbox's unique index on SQLite, in one run.

    .venv/bin/python tests/bench/bench_message_ids.py                  # 1,000,000 rows
    .venv/bin/python tests/bench/bench_message_ids.py --rows 100000

Rows are written as planning writes them (``INSERT ... SELECT`` per span of 50,000 ids, one
transaction each) into a table with a unique Message-ID column, with three shapes:

- ``old``: ``<eN.sID.X@domain>`` (X shared by the edition): ordered, and guessable;
- ``random``: ``<R@domain>``, R 128 random bits per row (``randomblob``);
- ``marked``: ``<T.R@domain>``, T the span's time mark (what planning writes,
  ``storage.planning._time_mark``): random where it matters, local in the index.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SPAN = 50_000
RANDOM = "lower(hex(randomblob(16)))"


def shape(kind: str) -> str:
    if kind == "old":
        return "'<e1.s' || value || '.0123456789ab@example.com>'"
    if kind == "random":
        return f"'<' || {RANDOM} || '@example.com>'"
    from newsletter.storage.planning import _time_mark

    return f"'<{_time_mark()}.' || {RANDOM} || '@example.com>'"


def measure(kind: str, rows: int, directory: Path) -> float:
    """Microseconds per row written."""
    path = directory / f"{kind}.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, message_id VARCHAR(300) NOT NULL UNIQUE)")
    db.execute("CREATE TABLE s (value INTEGER PRIMARY KEY)")
    db.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
        " INSERT INTO s SELECT x FROM c",
        (rows,),
    )
    db.commit()
    started = time.perf_counter()
    for start in range(1, rows + 1, SPAN):
        db.execute(
            f"INSERT INTO t (message_id) SELECT {shape(kind)} FROM s WHERE value >= ? AND value < ?",
            (start, start + SPAN),
        )
        db.commit()
    elapsed = time.perf_counter() - started
    db.close()
    path.unlink()
    return elapsed / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("old", "random", "marked"):
            print(
                f"{kind:>7}: {measure(kind, args.rows, Path(tmp)):7.2f} µs/row at {args.rows:,} rows",
                flush=True,
            )


if __name__ == "__main__":
    main()
