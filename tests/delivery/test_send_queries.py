"""What a send asks the database, row batch after row batch: every statement finds its rows
by an index. A statement that reads a whole table costs nothing at 40 readers and most of the
send at 100,000 (it runs per batch, or twice a second), so the plans are checked here, on the
statements a real send to the sink issued, with SQLite's own EXPLAIN QUERY PLAN."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from sqlalchemy import event

from newsletter.sink.faults import FaultRule

WHOLE_TABLE = re.compile(r"\bSCAN (subscribers|deliveries)\b")


def test_no_statement_of_a_sending_edition_reads_a_whole_table_on_sqlite(world):
    """Regression: the twice-a-second question "who left since the send began"
    (``SubscriberStore.inactive_since``) read every subscriber, 20 ms a time at 100,000."""
    world.configure(delivery_batch_size=10)
    world.add_subscribers(60)
    world.add_report()
    # 30 ms a message at the sink over two connections: the send lasts about a second, long
    # enough for the half-second question to be asked.
    world.sink.faults.add(FaultRule(stage="data", action="delay", delay=0.03))
    engine = world.store.engine
    sending = [False]
    statements: dict[str, Any] = {}

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if sending[0] and not executemany:
            statements.setdefault(statement, parameters)

    def planned(_total: int) -> None:
        sending[0] = True

    event.listen(engine, "before_cursor_execute", capture)
    try:
        result = world.run("queries", on_planned=planned)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert result.tally.get("sent") == 60
    assert any("updated_at >=" in s for s in statements), "the send asked who left since it began"
    assert any("json_each" in s for s in statements), "batches name their rows as one bound list"

    database = world.settings().database.url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        scans = {}
        for statement, parameters in statements.items():
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters))
            if WHOLE_TABLE.search(plan):
                scans[statement] = plan
    assert not scans, "statements of a send that read a whole table:\n" + "\n".join(
        f"{s}\n  -> {p}" for s, p in scans.items()
    )
