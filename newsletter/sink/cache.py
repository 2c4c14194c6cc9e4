"""`ParsedCache`: the heavy views of messages (bytes, parsed MIME, checks), bounded by count.

A `StoredMessage` keeps only its envelope and a few short header strings for ever; its raw
bytes, parsed headers and body, and checks live here, keyed by message id, for at most
`max_messages` messages (least recently used go first) and are rebuilt from the Maildir file
when asked for again. Raw bytes not yet written to disk are *pinned*: never evicted until the
store's writer has written them, so eviction can never lose a message.

Thread-safe: the SMTP thread adds, the viewer reads, the writer unpins.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_PARSED_CACHE = 20


class ParsedCache:
    """LRU of per-message views; `max_messages` None means unbounded (one-off messages)."""

    def __init__(self, max_messages: int | None = DEFAULT_PARSED_CACHE) -> None:
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"the parsed-message cache must hold >= 1 message, got {max_messages}")
        self.max_messages = max_messages
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._pinned: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, msg_id: str, key: str, compute: Callable[[], T]) -> T:
        """The cached `key` view of `msg_id`, computing (outside the lock) and caching it if absent."""
        with self._lock:
            entry = self._entries.get(msg_id)
            if entry is not None and key in entry:
                self._entries.move_to_end(msg_id)
                return entry[key]
            if key == "raw" and msg_id in self._pinned:
                return self._pinned[msg_id]  # type: ignore[return-value]
        value = compute()
        self.put(msg_id, key, value)
        return value

    def put(self, msg_id: str, key: str, value: Any) -> None:
        with self._lock:
            self._entries.setdefault(msg_id, {})[key] = value
            self._entries.move_to_end(msg_id)
            if self.max_messages is not None:
                while len(self._entries) > self.max_messages:
                    self._entries.popitem(last=False)

    def pin_raw(self, msg_id: str, raw: bytes) -> None:
        """Hold `raw` until `unpin_raw` (the bytes are not on disk yet)."""
        with self._lock:
            self._pinned[msg_id] = raw

    def pinned_raw(self, msg_id: str) -> bytes | None:
        with self._lock:
            return self._pinned.get(msg_id)

    def unpin_raw(self, msg_id: str) -> bytes | None:
        """The bytes are on disk now: let them go (they are read back when asked for)."""
        with self._lock:
            return self._pinned.pop(msg_id, None)

    def drop(self, msg_id: str) -> None:
        """Forget everything about `msg_id` (it was deleted)."""
        with self._lock:
            self._entries.pop(msg_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def cached_ids(self) -> list[str]:
        """Ids with cached views, least recently used first (pinned bytes not included)."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def pinned(self) -> int:
        with self._lock:
            return len(self._pinned)
