"""The database behind one facade: ``Store`` opens it and hands out one part per entity.

SQLite by default, any SQLAlchemy URL (PostgreSQL through psycopg 3) by
``database.url``. Each part owns one entity's queries (``store.subscribers``,
``store.reports``, ``store.editions``, ``store.outbox``, ``store.bounces``,
``store.locks``, ``store.feeds``, ``store.planning``); code that needs one part is given that part only.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from newsletter.storage.planning import PlanningStore
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
        if url.startswith("sqlite"):
            _require_sqlite_features()
        parent = default_sqlite_parent(url)
        self.read_only = False
        if parent is not None:
            url, self.read_only = _sqlite_location(url, parent)
        try:
            connect_args: dict[str, Any] = {}
            if url.startswith("sqlite"):
                # Several threads (sender connections, web) share the engine; SQLite
                # serialises writers itself, a busy timeout makes them wait instead of fail.
                connect_args = {"check_same_thread": False, "timeout": 30}
            # pool_pre_ping: a connection the database dropped (a restart) is replaced, not used.
            self.engine: Engine = sa.create_engine(
                url, connect_args=connect_args, future=True, pool_pre_ping=True
            )
            if url.startswith("sqlite"):
                sa.event.listen(
                    self.engine, "connect", _sqlite_read_only_pragmas if self.read_only else _sqlite_pragmas
                )
                sa.event.listen(self.engine, "handle_error", _refuse_writes_to_read_only)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database {url!r}: {_one_line(exc)}") from exc
        self.url = url
        self.clock = clock
        self.subscribers = SubscriberStore(self.engine, clock=clock)
        self.reports = ReportStore(self.engine, clock=clock)
        self.editions = EditionStore(self.engine, clock=clock)
        self.outbox = OutboxStore(self.engine, clock=clock)
        self.planning = PlanningStore(self.engine, clock=clock)
        self.bounces = BounceStore(self.engine, clock=clock)
        self.locks = LockStore(self.engine, clock=clock)
        self.feeds = FeedStateStore(self.engine, clock=clock)
        self.suppressions = SuppressionStore(self.engine, clock=clock)
        self.webmail = WebMailStore(self.engine, clock=clock)
        self.accounts = AccountStore(
            self.engine, clock=clock
        )  # the operator console's users, sessions, tokens, audit
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


SQLITE_MINIMUM = (3, 35)  # RETURNING (claims, commits, renewals); UPDATE ... FROM (3.33) comes with it


def _require_sqlite_features() -> None:
    """StoreError, one line, when this Python's SQLite lacks what sends and imports use:
    RETURNING and UPDATE ... FROM (3.35) and the JSON functions (``json_each``, built in
    since 3.38, an option before). Refused at start, not as a traceback mid-send."""
    version = ".".join(map(str, sqlite3.sqlite_version_info))
    hint = (
        "Use a Python built with a newer SQLite (python.org and Debian 12 builds are),"
        " or PostgreSQL (database.url)."
    )
    if sqlite3.sqlite_version_info < SQLITE_MINIMUM:
        raise StoreError(
            f"this Python's SQLite is {version};"
            f" the service needs {'.'.join(map(str, SQLITE_MINIMUM))} or newer",
            hint=hint,
        )
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.OperationalError as exc:
        raise StoreError(
            f"this Python's SQLite ({version}) has no JSON functions ({exc})", hint=hint
        ) from exc
    finally:
        probe.close()


def _sqlite_location(url: str, parent: Path) -> tuple[str, bool]:
    """The URL to open and whether the file is read-only; StoreError for a directory that does not exist.

    Only the default location is created on first use: a configured path whose directory
    is missing is most likely a typo, and creating it would start an empty database there.
    """
    from newsletter.config import DEFAULT_DATABASE_URL

    if url == DEFAULT_DATABASE_URL:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise StoreError(
            f"the database directory {parent} does not exist (database.url {url!r})",
            hint="Check database.url (NEWSLETTER_DATABASE_URL) for a typo;"
            " to start a new database there, create the directory first.",
        )
    path = Path(url.removeprefix("sqlite:///"))
    writable = (
        os.access(path, os.W_OK) and os.access(parent, os.W_OK)
        if path.exists()
        else os.access(parent, os.W_OK)
    )
    if path.exists() and not writable:
        # Read-only: reads work (subscribers list, editions, preview --no-fetch); writes get a clear error.
        return f"sqlite:///{_read_only_uri(path)}&uri=true", True
    return url, False


def _read_only_uri(path: Path) -> str:
    """A SQLite URI that reads ``path`` without writing anything.

    A WAL database needs its -shm file to be read; where that cannot be created (a
    read-only directory, the file closed cleanly), SQLite reads it only as immutable.
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True)
        try:
            probe.execute("PRAGMA schema_version").fetchone()
            return uri
        finally:
            probe.close()
    except sqlite3.Error:
        return uri + "&immutable=1"


def _refuse_writes_to_read_only(context: Any) -> None:
    """A write to a read-only SQLite file becomes one StoreError line, not a driver traceback."""
    if "readonly database" in str(context.original_exception):
        raise StoreError(
            "the database file is read-only, and this command writes to it",
            hint="Run it as a user that may write the file (and its directory). Read-only commands work:"
            " subscribers list, editions, config, preview --no-fetch.",
        ) from context.original_exception


def _one_line(error: object) -> str:
    # Driver messages (psycopg's above all) span lines; an operator error is one line.
    return " ".join(str(error).split())


def _sqlite_read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # the journal mode is the file's own: changing it would write
    cursor.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the web app read while a send writes; NORMAL sync is safe with WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # A deleted row's bytes are zeroed: `remove --forget` must not leave an erased address
    # readable in the file's free space. Debian's SQLite does this by default; others may not.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
