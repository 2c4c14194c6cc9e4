"""Greylisting benchmark: a clean send and a send with 5% of readers greylisted, in one run
(run by hand, not in make test).

    .venv/bin/python tests/bench/bench_greylist.py
    .venv/bin/python tests/bench/bench_greylist.py --readers 5000 --share 0.05 --connections 4
    .venv/bin/python tests/bench/bench_greylist.py --refusals 4   # greylisted for 4 attempts

Both sends are ``EditionRunner.run`` (what ``newsletter send`` runs) on a fresh SQLite
database of N readers, with the built-in retry settings (``delivery.retry_delay`` 1 s,
``smtp.retries`` 3, ``delivery.backoff`` 300 s first), against one in-process sink
(``newsletter.sink``). In the greylisted send, a sink fault rule per greylisted reader answers
450 at RCPT on their first attempt (``--refusals``: their first N attempts, as a server that
greylists for minutes refuses every retry made seconds later). The timed part is the send alone
(planning included; setup not). Afterwards the runner's clock moves to each next due time and a
resume sends the deferred rows, until none is left, and the script checks that every greylisted
reader got exactly one message, with their row's Message-ID.

Target: the greylisted send within 1.5x of the clean one (a refused row is deferred and its
connection goes on; before the retry policy it slept 1, 2, 4 s holding the connection).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))

from newsletter.models import DeliveryState  # noqa: E402
from newsletter.sink.faults import FaultRule  # noqa: E402
from newsletter.sink.server import SinkServer  # noqa: E402
from tests.factories import FakeClock, Services, bulk_subscribers, service_env  # noqa: E402
from tests.invariants import edition_rows, header, header_fields  # noqa: E402

TARGET_RATIO = 1.5


def send(
    work: Path, sink: SinkServer, *, readers: int, share: float, connections: int, refusals: int
) -> dict[str, object]:
    """One edition to ``readers`` readers, ``share`` of them refused ``refusals`` times; its figures."""
    work.mkdir()
    clock = FakeClock(datetime.now(UTC))
    env = service_env(
        work,
        smtp_port=sink.port,
        NEWSLETTER_DELIVERY_RETRY_DELAY=None,  # the built-in retry settings, not the tests' fast ones
        NEWSLETTER_SMTP_CONNECTIONS=str(connections),
    )
    services = Services(work, env, clock=clock)
    try:
        service = services.new()
        bulk_subscribers(service.store, readers, domain=f"{work.name}.example.org")
        emails = [f"reader{i:06d}@{work.name}.example.org" for i in range(readers)]
        step = round(1 / share) if share else 0
        greylisted = emails[::step] if step else []
        for email in greylisted:
            sink.faults.add(
                FaultRule(
                    stage="rcpt", code=450, text="4.7.1 Greylisted, try later", to=email, times=refusals
                )
            )
        started = time.perf_counter()
        result = service.runner.run(key=work.name)
        seconds = time.perf_counter() - started
        rows = edition_rows(service.store, result.edition.id)
        states: dict[str, int] = {}
        for row in rows:
            states[row.state.value] = states.get(row.state.value, 0) + 1
        figures: dict[str, object] = {"seconds": seconds, "states": states, "greylisted": len(greylisted)}
        if greylisted:
            # The later attempts: at each next due time, a resume sends the deferred rows.
            resumed = time.perf_counter()
            for _ in range(refusals + 1):
                due = service.store.outbox.next_due(result.edition.id)
                if due is None:
                    break
                clock.set(due + timedelta(seconds=1))
                service.runner.resume()
            figures["resume_seconds"] = time.perf_counter() - resumed
            by_email = {r.email: r for r in edition_rows(service.store, result.edition.id)}
            wrong = []
            for email in greylisted:
                row = by_email[email]
                got = [header(header_fields(m.raw), "Message-ID") for m in sink.messages(to=email)]
                if row.state is not DeliveryState.SENT or got != [row.message_id]:
                    wrong.append((email, row.state.value, got))
            figures["later_attempt_wrong"] = wrong
            figures["final_states"] = {
                s: sum(1 for r in by_email.values() if r.state.value == s)
                for s in {r.state.value for r in by_email.values()}
            }
        return figures
    finally:
        services.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--share", type=float, default=0.05, help="share of readers greylisted")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--refusals", type=int, default=1, help="attempts a greylisted reader is refused")
    parser.add_argument("--rounds", type=int, default=3, help="clean and greylisted sends, alternated")
    args = parser.parse_args()
    options = {"readers": args.readers, "connections": args.connections, "refusals": args.refusals}
    clean: list[dict[str, object]] = []
    grey: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-greylist-") as tmp:
        sink = SinkServer(maildir=Path(tmp) / "maildir", host="127.0.0.1", smtp_port=0)
        sink.start()
        try:
            # A small send first, untimed: imports, template compilation and the sink's first
            # connections are paid by neither measured send.
            send(Path(tmp) / "warmup", sink, **{**options, "readers": 50}, share=0.0)
            for n in range(args.rounds):
                clean.append(send(Path(tmp) / f"clean{n}", sink, share=0.0, **options))
                grey.append(send(Path(tmp) / f"greylisted{n}", sink, share=args.share, **options))
        finally:
            sink.stop()
    clean_s = statistics.median(float(f["seconds"]) for f in clean)  # type: ignore[arg-type]
    grey_s = statistics.median(float(f["seconds"]) for f in grey)  # type: ignore[arg-type]
    ratio = grey_s / clean_s
    print(
        f"readers {args.readers}, connections {args.connections}, greylisted {grey[0]['greylisted']}"
        f" (refused {args.refusals} times each), {args.rounds} rounds"
    )
    print(f"clean send:       {clean_s:.2f} s median  ({_each(clean)})")
    print(f"greylisted send:  {grey_s:.2f} s median  ({_each(grey)})")
    print(f"states after the greylisted send: {grey[-1]['states']}")
    print(f"ratio:            {ratio:.2f}x (target within {TARGET_RATIO}x)")
    print(f"later attempts:   {grey[-1]['resume_seconds']:.2f} s, then {grey[-1]['final_states']}")
    wrong = sum(len(f["later_attempt_wrong"]) for f in grey)  # type: ignore[arg-type]
    print(f"greylisted readers without exactly one message with their Message-ID: {wrong}")
    return 0 if ratio <= TARGET_RATIO and not wrong else 1


def _each(runs: list[dict[str, object]]) -> str:
    return ", ".join(f"{float(r['seconds']):.2f}" for r in runs)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
