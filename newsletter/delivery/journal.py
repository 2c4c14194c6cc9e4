"""The send journal: a per-process append-only file that survives SIGKILL.

The sender commits results to the database in batches (one transaction per
batch keeps throughput). Between commits, the journal is the record of what
happened: a line ``S <id>`` just before a message's data goes to the server
and ``R <id> <state> <code>`` when its reply arrives. Each line is one
``os.write`` on an O_APPEND descriptor, so a killed process loses nothing the
kernel accepted. On resume, ``replay`` tells for each row left "sending":
its recorded result, "in flight" (data sent, reply unknown), or untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import DeliveryError
from newsletter.models import DeliveryState


@dataclass(frozen=True)
class JournalEntry:
    state: DeliveryState | None  # None: data was sent, no reply recorded (in flight)
    code: int | None
    reply: str = ""


class Journal:
    """Append-only journal of one sender process for one edition."""

    def __init__(self, directory: Path, edition_id: int) -> None:
        """Open (create) this process's journal; DeliveryError, before any row is claimed, if it cannot."""
        self.path = directory / f"edition-{edition_id}.{os.getpid()}.journal"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise DeliveryError(
                f"cannot write the send journal in {directory}: {exc.strerror or exc}",
                hint="Set delivery.journal_dir (NEWSLETTER_DELIVERY_JOURNAL_DIR) to a directory this user"
                " can write; the edition waits, unsent, for 'newsletter send --resume'.",
            ) from exc

    def data_sent(self, delivery_id: int) -> None:
        os.write(self._fd, b"S %d\n" % delivery_id)

    def result(self, delivery_id: int, state: DeliveryState, code: int | None, reply: str = "") -> None:
        # The reply goes last and on one line, so a bounce recovered after a kill keeps its text.
        text = " ".join(reply.split())[:300].encode("utf-8", "replace")
        os.write(self._fd, b"R %d %s %d %s\n" % (delivery_id, state.value.encode(), code or 0, text))

    def close(self, *, remove: bool) -> None:
        """Close; remove the file once every result in it is committed to the database."""
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)


def journal_files(directory: Path, edition_id: int) -> list[Path]:
    return sorted(directory.glob(f"edition-{edition_id}.*.journal")) if directory.is_dir() else []


def journal_owner(path: Path) -> tuple[int, int] | None:
    """(edition id, pid) a journal file belongs to, from its name ``edition-<id>.<pid>.journal``;
    None for a file not named so."""
    edition, _, rest = path.name.removeprefix("edition-").partition(".")
    pid = rest.removesuffix(".journal")
    return (
        (int(edition), int(pid))
        if path.name.startswith("edition-") and edition.isdigit() and pid.isdigit()
        else None
    )


def journals_in(directory: Path) -> list[Path]:
    """Every journal file in ``directory`` (any edition, any process)."""
    return (
        sorted(p for p in directory.glob("edition-*.*.journal") if journal_owner(p) is not None)
        if directory.is_dir()
        else []
    )


def replay(paths: list[Path]) -> dict[int, JournalEntry]:
    """What the journals say about each delivery id (the last line about an id wins)."""
    entries: dict[int, JournalEntry] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # consumed and removed by the recovery that ran before this one
        for raw in data.splitlines():
            parts = raw.split(b" ", 4)
            try:
                if parts[0] == b"S" and len(parts) == 2:
                    entries[int(parts[1])] = JournalEntry(None, None)
                elif parts[0] == b"R" and len(parts) >= 4:
                    code = int(parts[3])
                    reply = parts[4].decode("utf-8", "replace").strip() if len(parts) == 5 else ""
                    entries[int(parts[1])] = JournalEntry(
                        DeliveryState(parts[2].decode()), code or None, reply
                    )
            except (ValueError, IndexError):
                continue  # a line torn by the kill: the row counts as in flight or untouched
    return entries
