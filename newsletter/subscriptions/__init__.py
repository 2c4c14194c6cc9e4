"""Subscriber operations for operators: validate and add one, import lists (ours and other
tools'), export.

- ``addresses``: normalising addresses, names and topics; adding one subscriber;
- ``formats``: other tools' export columns and status words, delimiter sniffing, ``--map``;
- ``importer``: the batched import, its summary and its bad rows;
- ``export``: our CSV;
- ``operations``: what an operator does to one reader (add, edit, reactivate, remove, forget),
  audited; the CLI, the console and the API call it.
"""

from __future__ import annotations

from newsletter.subscriptions.addresses import (
    add_subscriber,
    clean_name,
    normalise_email,
    parse_topics,
    unknown_topics,
)
from newsletter.subscriptions.export import CSV_FIELDS, export_csv, export_text
from newsletter.subscriptions.importer import ImportResult, import_csv, import_file

__all__ = [
    "CSV_FIELDS",
    "ImportResult",
    "add_subscriber",
    "clean_name",
    "export_csv",
    "export_text",
    "import_csv",
    "import_file",
    "normalise_email",
    "parse_topics",
    "unknown_topics",
]
