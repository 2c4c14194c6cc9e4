"""Zone records for the DKIM tests (the name server itself is the ``dns_zone`` fixture in conftest)."""

from __future__ import annotations

from newsletter.delivery.dkim_keys import DkimKey

Record = tuple[str, str, str]


def key_record(key: DkimKey) -> Record:
    """The TXT record that publishes ``key`` at its selector, relative to the zone."""
    return (f"{key.selector}._domainkey", "TXT", key.txt_record())
