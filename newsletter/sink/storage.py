"""The sink's mail store: a real Maildir on disk plus a JSON-lines index beside it.

Layout of `maildir`::

    tmp/  new/  cur/        standard Maildir; any mail client can open it
    sink-index.jsonl        one line per received message (envelope, time, size) and one
                            {"deleted": id} line per deletion; replayed on start

Ownership: the sink deletes only files it wrote itself -- those named in its index. A
message file already in the Maildir (a developer's own mail, another tool's) is *foreign*:
listed and shown, never deleted, not by the `max_messages` cap (which counts the sink's own
messages only), not by `delete` (`ForeignMessageError`) and not by `clear`. A file whose
index line was lost in a crash is treated as foreign too: keeping mail is the safe mistake.

Memory: messages keep their envelope and short header strings; bytes and parsed views live
in one `ParsedCache` (a count-bounded LRU), so memory does not grow with what was looked at.

Files hold the message bytes exactly as received (CRLF line ends included), written as
Maildir requires: into tmp/, then renamed into new/, so readers never see half a message.

Speed matters more than durability here (it is a development sink, and must out-receive
MailDev): `add` updates the in-memory list at once -- so `messages()` and `wait_for` see
a message before the client gets its 250 -- and hands the disk work to one writer thread,
which writes files and batches index lines in order, without fsync. `flush()` waits until
everything handed over so far is on disk; `close()` flushes. A crash loses at most what was
still queued; message files whose index line was lost are adopted on the next start by
scanning new/ and cur/ (envelope approximated from the From/To headers) -- as foreign.

Thread-safety: every method may be called from any thread; `changed` is a Condition that is
notified after each add/delete/clear (used by `wait_for`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from newsletter.sink.cache import DEFAULT_PARSED_CACHE, ParsedCache
from newsletter.sink.errors import ForeignMessageError, StorageError
from newsletter.sink.message import StoredMessage

log = logging.getLogger(__name__)

INDEX_NAME = "sink-index.jsonl"


def _hostname() -> str:
    # Maildir: "/" and ":" in the host part must be encoded.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def _index_line(m: StoredMessage) -> str:
    return json.dumps(
        {
            "id": m.id,
            "file": f"new/{m.path.name}",
            "from": m.mail_from,
            "to": list(m.rcpt_tos),
            "at": m.received_at.timestamp(),
            "size": m.size,
        },
        separators=(",", ":"),
    )


class MaildirStore:
    """Messages in a Maildir; listed newest first; at most `max_messages` of its own (oldest go).

    `parsed_cache`: how many messages keep their bytes and parsed views in memory.
    """

    def __init__(
        self, maildir: Path, *, max_messages: int = 1000, parsed_cache: int = DEFAULT_PARSED_CACHE
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self.maildir = Path(maildir)
        self.max_messages = max_messages
        self.cache = ParsedCache(parsed_cache)
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._messages: OrderedDict[str, StoredMessage] = OrderedDict()
        self._own: OrderedDict[str, None] = OrderedDict()  # ids of the files the sink wrote, oldest first
        self._deleted_lines = 0
        self._host = _hostname()
        self._seq = 0
        self._listeners: list[Callable[[StoredMessage], None]] = []
        self._dir = str(self.maildir)
        try:
            for sub in ("tmp", "new", "cur"):
                (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create maildir {self.maildir}: {exc.strerror or exc}; pick a writable --maildir"
            ) from exc
        self._index_path = self.maildir / INDEX_NAME
        try:
            needs_rewrite = self._load()
        except OSError as exc:
            raise StorageError(
                f"cannot read maildir {self.maildir}: {exc.strerror or exc}; check its permissions"
            ) from exc
        self._ops: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="sink-store", daemon=True)
        self._closed = False
        if needs_rewrite:
            self._write_index(self._own_messages())
        self._writer.start()

    # -- receiving ---------------------------------------------------------------------
    def add(self, mail_from: str, rcpt_tos: list[str] | tuple[str, ...], raw: bytes) -> StoredMessage:
        """Record one message and queue it for disk. The hot path: no parsing, no I/O."""
        now = time.time()
        with self._lock:
            self._seq += 1
            msg_id = f"{int(now * 1000):x}{self._seq & 0xFFFF:04x}{secrets.token_hex(2)}"
            name = f"{int(now)}.{msg_id}.{self._host}"
            message = StoredMessage(
                id=msg_id,
                mail_from=mail_from,
                rcpt_tos=tuple(rcpt_tos),
                received_at=datetime.fromtimestamp(now, UTC),
                size=len(raw),
                path=self.maildir / "new" / name,
                cache=self.cache,
            )
            self.cache.pin_raw(msg_id, raw)  # readable at once, never evicted before it is on disk
            self._messages[msg_id] = message
            self._own[msg_id] = None
            self._ops.put(("write", message))
            while len(self._own) > self.max_messages:
                oldest_id, _ = self._own.popitem(last=False)
                oldest = self._messages.pop(oldest_id)
                self.cache.drop(oldest_id)
                self._ops.put(("delete", oldest))
                self._deleted_lines += 1
            self._maybe_compact()
            self.changed.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(message)
        return message

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every change made so far is on disk (files and index lines)."""
        done = threading.Event()
        self._ops.put(("barrier", done))
        if not done.wait(timeout):
            raise StorageError(
                f"maildir {self.maildir} writer did not catch up in {timeout}s; is the disk full?"
            )

    # -- reading -----------------------------------------------------------------------
    def newest_first(self) -> list[StoredMessage]:
        """All messages, newest first."""
        with self._lock:
            return list(reversed(self._messages.values()))

    def get(self, msg_id: str) -> StoredMessage | None:
        with self._lock:
            return self._messages.get(msg_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    @property
    def foreign_count(self) -> int:
        """Messages in the Maildir that the sink did not store (never deleted by it)."""
        with self._lock:
            return len(self._messages) - len(self._own)

    def is_own(self, msg_id: str) -> bool:
        """True if the sink wrote this message's file (and so may delete it)."""
        with self._lock:
            return msg_id in self._own

    def subscribe(self, listener: Callable[[StoredMessage], None]) -> Callable[[], None]:
        """Call `listener(message)` after each receipt (on the SMTP thread; keep it quick).

        Returns a function that unsubscribes.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- removing ----------------------------------------------------------------------
    def delete(self, msg_id: str) -> bool:
        """Delete one message (file and index entry). False if there was no such message.

        `ForeignMessageError` for a message the sink did not store: its file is never touched.
        """
        with self._lock:
            if msg_id not in self._messages:
                return False
            if msg_id not in self._own:
                raise ForeignMessageError(
                    f"message {msg_id} was in {self.maildir} before the sink stored anything there; "
                    "the sink never deletes mail it did not store (remove it with your mail client)"
                )
            message = self._messages.pop(msg_id)
            del self._own[msg_id]
            self.cache.drop(msg_id)
            self._ops.put(("delete", message))
            self._deleted_lines += 1
            self._maybe_compact()
            self.changed.notify_all()
            return True

    def clear(self) -> int:
        """Delete every message the sink stored (foreign ones stay); returns how many."""
        with self._lock:
            gone = [self._messages.pop(msg_id) for msg_id in self._own]
            self._own.clear()
            self.cache.clear()
            for message in gone:
                self._ops.put(("unlink", message))
            self._ops.put(("rewrite", []))
            self._deleted_lines = 0
            self.changed.notify_all()
            return len(gone)

    def close(self) -> None:
        """Write everything out and stop the writer thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ops.put(("stop", None))
        self._writer.join()

    def _maybe_compact(self) -> None:
        # Called under the lock, so the snapshot matches the order of queued operations.
        if self._deleted_lines > max(100, len(self._own)):
            self._ops.put(("rewrite", self._own_messages()))
            self._deleted_lines = 0

    def _own_messages(self) -> list[StoredMessage]:
        """The sink's own messages, oldest first: all the index may name (called under the lock)."""
        return [self._messages[msg_id] for msg_id in self._own]

    # -- the writer thread -------------------------------------------------------------
    def _write_loop(self) -> None:
        index = open(self._index_path, "a", encoding="utf-8")
        lines: list[str] = []
        try:
            while True:
                batch = [self._ops.get()]
                while True:  # take everything queued: one index write per batch
                    try:
                        batch.append(self._ops.get_nowait())
                    except queue.Empty:
                        break
                for op, arg in batch:
                    try:
                        if op == "write":
                            self._write_file(arg)
                            lines.append(_index_line(arg))
                        elif op == "delete":
                            self._remove_file(arg)
                            lines.append(json.dumps({"deleted": arg.id}))
                        elif op == "unlink":
                            self._remove_file(arg)
                        elif op == "rewrite":
                            lines.clear()
                            index.close()
                            self._write_index(arg)
                            index = open(self._index_path, "a", encoding="utf-8")
                        elif op in ("barrier", "stop"):
                            if lines:
                                index.write("\n".join(lines) + "\n")
                                index.flush()
                                lines.clear()
                            if op == "stop":
                                return
                            arg.set()
                    except OSError as exc:  # keep serving; the operator sees the log
                        log.error("sink maildir %s: %s failed: %s", self.maildir, op, exc)
                if lines:
                    index.write("\n".join(lines) + "\n")
                    index.flush()
                    lines.clear()
        finally:
            index.close()

    def _write_file(self, message: StoredMessage) -> None:
        name = message.path.name
        tmp = f"{self._dir}/tmp/{name}"
        raw = self.cache.pinned_raw(message.id)
        if raw is None:
            return  # already written
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(raw)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
        os.rename(tmp, f"{self._dir}/new/{name}")
        self.cache.unpin_raw(message.id)  # only now: until the rename, readers need the pinned bytes

    def _remove_file(self, message: StoredMessage) -> None:
        try:
            message.path.unlink()  # the usual case: still in new/ where we wrote it
            return
        except FileNotFoundError:
            pass
        for candidate in message._candidate_paths():
            try:
                candidate.unlink()
                return
            except FileNotFoundError:
                continue

    def _write_index(self, messages: list[StoredMessage]) -> None:
        tmp = self._index_path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for m in messages:
                fh.write(_index_line(m) + "\n")
        os.replace(tmp, self._index_path)

    # -- start-up ----------------------------------------------------------------------
    def _load(self) -> bool:
        """Replay the index (the sink's own files), then list the files it does not name as foreign.

        Returns True if the index should be rewritten (it had deletions or was incomplete).
        Only the sink's own messages count towards `max_messages`; foreign files are never removed.
        """
        records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        deletions = 0
        if self._index_path.exists():
            with open(self._index_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a crash
                    if "deleted" in rec:
                        records.pop(rec["deleted"], None)
                        deletions += 1
                    elif "id" in rec:
                        records[rec["id"]] = rec
        on_disk = self._scan_files()
        known: set[str] = set()
        found: list[tuple[StoredMessage, bool]] = []
        for rec in records.values():
            base = Path(rec["file"]).name
            if base not in on_disk:
                continue  # deleted behind our back, e.g. by a mail client
            known.add(base)
            found.append(
                (
                    StoredMessage(
                        id=rec["id"],
                        mail_from=rec.get("from", ""),
                        rcpt_tos=tuple(rec.get("to", ())),
                        received_at=datetime.fromtimestamp(rec["at"], UTC),
                        size=rec.get("size", 0),
                        path=self.maildir / "new" / base,
                        cache=self.cache,
                    ),
                    True,
                )
            )
        foreign = [
            self._adopt(base, actual, mtime) for base, (mtime, actual) in on_disk.items() if base not in known
        ]
        found.extend((message, False) for message in foreign)
        found.sort(key=lambda item: item[0].received_at)
        for message, own in found:
            if message.id in self._messages:
                continue  # two foreign files with the same name in new/ and cur/: list one
            self._messages[message.id] = message
            if own:
                self._own[message.id] = None
        owned = len(self._own)
        while len(self._own) > self.max_messages:
            oldest_id, _ = self._own.popitem(last=False)
            self._remove_file(self._messages.pop(oldest_id))
        if self._messages:
            log.info(
                "sink maildir %s: %d message(s) stored by the sink, %d already there (never deleted by it)",
                self.maildir,
                len(self._own),
                self.foreign_count,
            )
        return bool(deletions or owned > self.max_messages or len(records) != owned)

    def _scan_files(self) -> dict[str, tuple[float, Path]]:
        found: dict[str, tuple[float, Path]] = {}
        for sub in ("new", "cur"):
            with os.scandir(self.maildir / sub) as entries:
                for entry in entries:
                    if entry.is_file() and not entry.name.startswith("."):
                        base = entry.name.split(":", 1)[0]
                        found[base] = (entry.stat().st_mtime, Path(entry.path))
        return found

    @staticmethod
    def _adopt_id(base: str) -> str:
        parts = base.split(".")
        if len(parts) >= 3 and len(parts[1]) >= 12 and all(c in "0123456789abcdef" for c in parts[1]):
            return parts[1]  # one of ours
        return hashlib.sha1(base.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def _adopt(self, base: str, actual: Path, mtime: float) -> StoredMessage:
        """A message file the index does not name (foreign): approximate the envelope from its headers."""
        raw = actual.read_bytes()
        probe = StoredMessage.from_bytes(raw, msg_id=self._adopt_id(base), path=self.maildir / "new" / base)
        sender = [a for _, a in getaddresses([probe.from_]) if a]
        return StoredMessage(
            id=probe.id,
            mail_from=sender[0] if sender else "",
            rcpt_tos=probe.to,
            received_at=datetime.fromtimestamp(mtime, UTC),
            size=len(raw),
            path=probe.path,
            cache=self.cache,
        )
