"""The database behind one facade: ``Store`` opens it and hands out one part per entity.

SQLite by default, any SQLAlchemy URL (PostgreSQL through psycopg 3) by
``database.url``. Each part owns one entity's queries (``store.subscribers``,
``store.reports``, ``store.editions``, ``store.outbox``, ``store.bounces``,
``store.locks``, ``store.feeds``); code that needs one part is given that part only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from newsletter.errors import StoreError
from newsletter.storage.accounts import AccountStore
from newsletter.storage.bounces import BounceStore
from newsletter.storage.console_views import ConsoleViews
from newsletter.storage.editions import EditionStore
from newsletter.storage.feeds import FeedStateStore
from newsletter.storage.locks import LockStore
from newsletter.storage.migrations import ensure_schema
from newsletter.storage.outbox import OutboxStore
from newsletter.storage.part import Clock, utcnow
from newsletter.storage.reports import ReportStore
from newsletter.storage.subscribers import SubscriberStore
from newsletter.storage.suppressions import SuppressionStore
from newsletter.storage.webmail import WebMailStore


def default_sqlite_parent(url: str) -> Path | None:
    """The directory a file-backed SQLite URL needs, or None for other URLs."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///")).parent
    return None


class Store:
    """The service's database: one per process; it owns the SQLAlchemy engine.

    ``clock`` stamps every row the parts write (tests pass a fake one). With
    ``create`` (the default) a fresh database is brought to the newest schema and
    one that is behind is refused (see ``newsletter.storage.migrations``).
    """

    def __init__(self, url: str, *, create: bool = True, clock: Clock = utcnow) -> None:
        parent = default_sqlite_parent(url)
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        try:
            connect_args: dict[str, Any] = {}
            if url.startswith("sqlite"):
                # Several threads (sender connections, web) share the engine; SQLite
                # serialises writers itself, a busy timeout makes them wait instead of fail.
                connect_args = {"check_same_thread": False, "timeout": 30}
            self.engine: Engine = sa.create_engine(url, connect_args=connect_args, future=True)
            if url.startswith("sqlite"):
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database {url!r}: {_one_line(exc)}") from exc
        self.url = url
        self.clock = clock
        self.subscribers = SubscriberStore(self.engine, clock=clock)
        self.reports = ReportStore(self.engine, clock=clock)
        self.editions = EditionStore(self.engine, clock=clock)
        self.outbox = OutboxStore(self.engine, clock=clock)
        self.bounces = BounceStore(self.engine, clock=clock)
        self.locks = LockStore(self.engine, clock=clock)
        self.feeds = FeedStateStore(self.engine, clock=clock)
        self.suppressions = SuppressionStore(self.engine, clock=clock)
        self.webmail = WebMailStore(self.engine, clock=clock)
        self.accounts = AccountStore(self.engine, clock=clock)  # the operator console's users, sessions, tokens, audit
        self.console = ConsoleViews(self.engine, clock=clock)  # the console's read-only views
        if create:
            self.create_schema()

    def create_schema(self) -> None:
        """Bring a fresh database to the newest schema; refuse one that is behind."""
        try:
            ensure_schema(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.url!r}: {_one_line(exc.orig)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def _one_line(error: object) -> str:
    # Driver messages (psycopg's above all) span lines; an operator error is one line.
    return " ".join(str(error).split())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the web app read while a send writes; NORMAL sync is safe with WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
