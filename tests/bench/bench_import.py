"""Import benchmark: `subscribers import` against the plain work it cannot avoid, in one run (by hand).

    .venv/bin/python tests/bench/bench_import.py                 # 100,000 rows
    .venv/bin/python tests/bench/bench_import.py --rows 20000
    .venv/bin/python tests/bench/bench_import.py --domains 100000   # every address at its own domain

One generated CSV (email,name,topics; 1 row in 200 has a bad address; the addresses spread
over ``--domains`` domains, default 1000) is imported twice,
each into a fresh SQLite file in a temporary directory:

(a) baseline, the plain work: ``csv.reader`` over the file, ``email_validator.validate_email``
    on every address, and one ``executemany`` of the good rows into a bare SQLite table;
(b) import: ``newsletter.subscriptions.import_file`` -- what `newsletter subscribers import`
    runs -- on a database made by ``Store`` (every index, the suppression lookups, batched
    transactions).

Printed: both wall and CPU times, rows per second, and the ratios (a) / (b) (1.0 = as fast
as the plain work; the target is at least 0.5). On a shared machine the CPU ratio is the
steadier figure: other processes lengthen wall times unevenly between the two runs.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from email_validator import EmailNotValidError, validate_email

from newsletter.storage.store import Store
from newsletter.subscriptions import import_file

TOPICS = ("", "Access Control", "Video Analytics;Business", "Networking")


def write_csv(path: Path, rows: int, domains: int = 1000) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("email", "name", "topics"))
        for i in range(rows):
            email = f"reader{i:07d}@example{i % domains}.org" if i % 200 else f"not-an-address-{i}"
            writer.writerow((email, f"Reader {i}", TOPICS[i % len(TOPICS)]))


def baseline(path: Path, db: Path) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), time.process_time()
    good = []
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        for email, name, topics in reader:
            try:
                address = validate_email(email, check_deliverability=False).normalized.lower()
            except EmailNotValidError:
                continue
            good.append((address, name, topics))
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL,"
        " name TEXT, topics TEXT)"
    )
    with conn:
        conn.executemany("INSERT INTO subscribers (email, name, topics) VALUES (?, ?, ?)", good)
    conn.close()
    return time.perf_counter() - start, time.process_time() - cpu, len(good)


def pipeline(path: Path, db: Path) -> tuple[float, float, int]:
    store = Store(f"sqlite:///{db}")
    try:
        start, cpu = time.perf_counter(), time.process_time()
        result = import_file(store, path)
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    finally:
        store.dispose()
    return elapsed, used, result.added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--domains",
        type=int,
        default=1000,
        help="distinct domains among the addresses (the import checks each domain once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "list.csv"
        write_csv(source, args.rows, args.domains)
        base_s, base_cpu, base_n = baseline(source, Path(tmp) / "baseline.sqlite")
        ours_s, ours_cpu, ours_n = pipeline(source, Path(tmp) / "import.sqlite")
    assert base_n == ours_n, f"the two runs stored different row counts: {base_n} vs {ours_n}"
    print(
        f"rows in file:            {args.rows:,} ({args.rows - base_n:,} invalid) at"
        f" {min(args.domains, args.rows):,} domain(s)"
    )
    print(
        f"(a) plain work:          {base_s:6.2f} s wall,"
        f" {base_cpu:6.2f} s CPU  {args.rows / base_s:10,.0f} rows/s"
    )
    print(
        f"(b) subscribers import:  {ours_s:6.2f} s wall,"
        f" {ours_cpu:6.2f} s CPU  {args.rows / ours_s:10,.0f} rows/s"
    )
    print(
        f"ratio (a)/(b):           {base_s / ours_s:.2f}x wall,"
        f" {base_cpu / ours_cpu:.2f}x CPU  (target >= 0.5x)"
    )


if __name__ == "__main__":
    main()
