"""`newsletter sink`: run the local SMTP sink from a terminal.

Exports `sink_command` (a click command); the main CLI registers it. Operator mistakes
(bad flag values, a port in use, an unwritable maildir) end in one `Error: ...` line with a
hint and exit status 1 or 2, never a traceback.
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

import click

from newsletter.sink.net import is_loopback

FAULT_HELP = """\b
Fault syntax (--fault, repeatable; rules apply in the order given):
  STAGE:ACTION[:KEY=VALUE]...
  STAGE   mail | rcpt | data
  ACTION  CODE[ TEXT]        reply CODE (400-599), e.g. "550 5.1.1 No such user"
          drop               close the connection instead of replying
                             (at data: the message is not stored)
          drop-after-store   data only: store the message, then close
                             without replying (the client cannot know)
          delay=SECONDS      wait, then carry on normally
  KEY     to=PATTERN from=PATTERN  fnmatch pattern or re:REGEX
          every=N after=N times=N  count matching events per rule
          probability=P seed=N     random, reproducible with a seed
          delay=SECONDS            wait before the action
  A 421 reply also closes the connection. TEXT and REGEX cannot contain ':'.

\b
Examples:
  --fault 'rcpt:550 5.1.1 No such user:to=*@bad.example'
  --fault 'data:451:probability=0.1:seed=7'
  --fault 'mail:421 Too many connections:every=5'
  --fault 'data:drop-after-store:after=10:times=1'
  --close-after 50        close each connection after 50 messages
"""

_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """'10M', '512K', '1.5MiB' or plain bytes -> bytes. ValueError with a hint otherwise."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"size {text!r} is not understood; use bytes or a K/M/G suffix, e.g. 10M")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[(unit or "")[:1].lower()])
    if size < 1:
        raise ValueError(f"size {text!r} must be at least 1 byte")
    return size


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


@click.command("sink", epilog=FAULT_HELP)
@click.option(
    "--smtp-port",
    type=click.IntRange(0, 65535),
    default=1025,
    show_default=True,
    help="SMTP port to listen on (0 picks a free one).",
)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sink-maildir"),
    show_default=True,
    help="Maildir to store messages in (created if missing; kept across restarts).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the web viewer and JSON API on this port (usually 8025). Off by default.",
)
@click.option(
    "--listen",
    "listen",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address to bind SMTP and the viewer to. Anything but loopback exposes the sink.",
)
@click.option(
    "--max-messages",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Keep at most this many of the messages the sink stored; its oldest are deleted. "
    "Files already in the Maildir are never deleted.",
)
@click.option(
    "--parsed-cache",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    metavar="N",
    help="Keep the bytes and parsed parts of at most N messages in memory (read back from disk).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer viewer requests for this Host name (repeatable); loopback names always work.",
)
@click.option(
    "--max-size",
    default="10M",
    show_default=True,
    metavar="SIZE",
    help="Largest message accepted (bytes, or K/M/G); bigger ones get 552.",
)
@click.option(
    "--fault", "faults", multiple=True, metavar="SPEC", help="Inject a fault (repeatable); syntax below."
)
@click.option(
    "--close-after",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Close each connection after N messages on it.",
)
@click.option(
    "--allow-remote-one-click",
    is_flag=True,
    help="Let the viewer's one-click unsubscribe POST to non-loopback hosts.",
)
@click.option("--quiet", is_flag=True, help="Do not print a line per received message.")
def sink_command(
    smtp_port: int,
    maildir: Path,
    http_port: int | None,
    listen: str,
    max_messages: int,
    parsed_cache: int,
    allow_hosts: tuple[str, ...],
    max_size: str,
    faults: tuple[str, ...],
    close_after: int | None,
    allow_remote_one_click: bool,
    quiet: bool,
) -> None:
    """Run the local SMTP sink: store every message in a Maildir, check it, show it.

    Point the sender at smtp://127.0.0.1:SMTP-PORT. With --http-port the viewer and the
    JSON API (/api/messages, /api/wait, /api/faults ...) are served too; a POST or DELETE
    needs the X-Sink-Token printed at start. Ctrl-C stops.
    """
    from newsletter.sink.errors import FaultSpecError, SinkError
    from newsletter.sink.faults import parse_fault_spec
    from newsletter.sink.server import SinkServer

    try:
        size_limit = parse_size(max_size)
    except ValueError as exc:
        raise _fail(f"--max-size: {exc}") from None
    rules = []
    for spec in faults:
        try:
            rules.append(parse_fault_spec(spec))
        except FaultSpecError as exc:
            raise _fail(f"--fault: {exc}") from None
    if not is_loopback(listen):
        click.echo(
            f"Warning: listening on {listen} exposes the sink, its viewer and its one-click "
            "action beyond this machine; use 127.0.0.1 unless you mean it.",
            err=True,
        )

    def report(message: Any) -> None:
        click.echo(
            f"{message.received_at:%H:%M:%S} {message.mail_from or '<>'} -> {', '.join(message.rcpt_tos)} "
            f"{message.subject!r} {message.size} bytes"
        )

    sink = SinkServer(
        maildir=maildir,
        host=listen,
        smtp_port=smtp_port,
        max_messages=max_messages,
        parsed_cache=parsed_cache,
        allowed_hosts=allow_hosts,
        max_message_size=size_limit,
        http_port=http_port,
        allow_remote_one_click=allow_remote_one_click,
        on_message=None if quiet else report,
    )
    for rule in rules:
        sink.faults.add(rule)
    sink.faults.close_after = close_after
    try:
        sink.start()
    except SinkError as exc:
        raise _fail(str(exc)) from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        click.echo(
            f"Sink listening on smtp://{listen}:{sink.smtp_port}, storing in {maildir} "
            f"({len(sink.store)} messages kept, max {max_messages})"
        )
        click.echo(
            f"Deletes only mail it stores itself: the {sink.store.foreign_count} message(s) already in "
            f"{maildir} that it did not store are never deleted."
        )
        if sink.http_url:
            click.echo(f"Viewer and API at {sink.http_url}/ (POST/DELETE need X-Sink-Token: {sink.token})")
        for rule in rules:
            click.echo(f"Fault: {rule.to_dict()}")
        if close_after:
            click.echo(f"Fault: close each connection after {close_after} messages")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.stop()
        click.echo("Sink stopped.")


def main() -> None:
    """Run the command standalone: `python -m newsletter.sink.cli`."""
    sink_command()


if __name__ == "__main__":
    main()
