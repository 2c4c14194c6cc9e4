"""The sink's exceptions: one tree, each message a single line that ends with a hint.

The sink stands apart from the rest of the package (it can test anything), so it has its
own small tree instead of importing `newsletter.errors`. The CLI prints `Error: <message>`.
"""

from __future__ import annotations


class SinkError(Exception):
    """Base of every error the sink raises on purpose."""


class ListenError(SinkError, OSError):
    """A port cannot be bound (in use, not permitted, unknown address)."""


class StorageError(SinkError, OSError):
    """The maildir cannot be created, read or written."""


class FaultSpecError(SinkError, ValueError):
    """A fault rule or its compact text form is invalid."""


class MessageGoneError(SinkError, LookupError):
    """The message is not (or no longer) in the sink."""


class ForeignMessageError(SinkError):
    """The message file was in the Maildir before the sink stored it: the sink never deletes it."""


class OneClickError(SinkError):
    """A one-click unsubscribe cannot be attempted (no usable URI, target not allowed).

    `refused_target` is True when there is a URI but the sink will not POST to it (a remote
    host without permission, or the sink itself): the viewer answers 403 then, 400 otherwise.
    """

    def __init__(self, message: str, *, refused_target: bool = False) -> None:
        super().__init__(message)
        self.refused_target = refused_target
