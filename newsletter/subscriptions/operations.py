"""What an operator does to one reader: add, edit, reactivate, remove, forget; each one audited.

The one path for these changes: the CLI (``newsletter subscribers ...``), the console's
reader pages and the API's ``/api/v1/readers`` call these functions, so a change made by
any of them leaves the same reader and the same audit entry. Finding the reader is the
caller's job (by address in the CLI, by id in the console and API); these functions take
the reader found, change it, then write the audit entry (who, what, which reader, from
where): an entry follows the change, so a change that failed leaves none.

Audit targets name the reader's address, except for a forgotten reader: the person asked
to be erased, so the entry names the hash the suppression list keeps (``sha256:...``), and
the earlier entries that named the address are given that hash too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.models import Cadence, Subscriber, SubscriberStatus
from newsletter.storage.store import Store
from newsletter.storage.suppressions import mailbox_hash
from newsletter.subscriptions.addresses import add_subscriber, parse_topics


@dataclass(frozen=True)
class Actor:
    """Who makes a change, as the audit log names them.

    ``name``: the console user's address, the API token owner's address, or for the CLI
    ``cli:<login>``; ``client``: the address the request came from ("" for the CLI);
    ``via``: added to the entry's detail in brackets (the API marks its entries "API").
    """

    name: str
    client: str = ""
    via: str = ""


def add_reader(
    store: Store, actor: Actor, email: str, *, name: str = "", topics: str | Sequence[str] = ()
) -> tuple[Subscriber, bool]:
    """Add an active reader (the operator vouches for consent): (reader, created).

    An address already here is returned unchanged (``reader.add-existing``); one on the
    suppression list is added with its suppressed status, never active.
    """
    reader, created = add_subscriber(store, email, name=name, topics=topics)
    _audit(store, actor, "reader.add" if created else "reader.add-existing", reader.email)
    return reader, created


def edit_reader(
    store: Store,
    actor: Actor,
    reader: Subscriber,
    *,
    topics: str | Sequence[str] | None = None,
    cadence: Cadence | None = None,
    paused: bool | None = None,
) -> Subscriber:
    """Change a reader's topics (empty: every topic), cadence or pause; None leaves a field as it is."""
    chosen = parse_topics(topics) if topics is not None else reader.topics
    cadence = cadence or reader.cadence
    paused = reader.paused if paused is None else paused
    store.subscribers.update_preferences(reader.id, topics=chosen, cadence=cadence, paused=paused)
    detail = f"topics {';'.join(chosen) or 'all'}, {cadence.value}{', paused' if paused else ''}"
    _audit(store, actor, "reader.edit", reader.email, detail)
    return store.subscribers.get_subscriber(reader.id) or reader


def reactivate_reader(store: Store, actor: Actor, reader: Subscriber) -> bool:
    """Make a bounced, unsubscribed or pending reader active again; False if they already were.

    Lifts the address from the suppression list. Audited either way (the entry says what
    the reader was), as the operator's decision is worth keeping even when it changed nothing.
    """
    changed = store.subscribers.set_status(
        reader.id, SubscriberStatus.ACTIVE, reason=f"reactivated by {actor.name}"
    )
    _audit(store, actor, "reader.reactivate", reader.email, f"was {reader.status.value}")
    return changed


def remove_reader(store: Store, actor: Actor, email: str, *, forget: bool = False) -> bool:
    """Delete a reader and their delivery history; False (nothing audited) if not a reader.

    An unsubscribed or bounced address stays on the suppression list. With ``forget``
    (the person asked to be erased) the address is suppressed whatever its status, its
    queued mails are dropped, and no audit entry names it any more: they name its hash.
    """
    if not store.subscribers.remove_subscriber(email, forget=forget):
        return False
    if not forget:
        _audit(store, actor, "reader.remove", email, "with their delivery history")
        return True
    store.webmail.forget(email)
    hashed = forgotten_target(email)
    store.accounts.replace_audit_target(email, hashed)
    _audit(store, actor, "reader.forget", hashed, "erased on request; only the mailbox's hash is kept")
    return True


def forgotten_target(email: str) -> str:
    """The audit target of a forgotten reader: the suppression list's hash of the mailbox."""
    return "sha256:" + mailbox_hash(email)


def _audit(store: Store, actor: Actor, action: str, target: str, detail: str = "") -> None:
    if actor.via:
        detail = f"{detail} ({actor.via})"
    store.accounts.audit(actor=actor.name, action=action, target=target, detail=detail, client=actor.client)
