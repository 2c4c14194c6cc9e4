"""Composition: build the core's objects from one Settings (used by every edge)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from newsletter.config import Settings
from newsletter.editions.runner import EditionRunner
from newsletter.storage.part import utcnow
from newsletter.storage.store import Store
from newsletter.tokens import TokenSigner


@dataclass
class Service:
    """The core objects for one process, created lazily so `--help` never opens a database."""

    settings: Settings
    dev_key: bool = False  # True: a per-run secret key was generated (links die with the process)
    clock: Callable[[], datetime] | None = None  # None: the real UTC clock; tests pass a fake one
    _store: Store | None = field(default=None, repr=False)
    _signer: TokenSigner | None = field(default=None, repr=False)
    _runner: EditionRunner | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database.url, clock=self.clock or utcnow)
        return self._store

    @property
    def signer(self) -> TokenSigner:
        if self._signer is None:
            key = self.settings.site.secret_key
            if not key and self.dev_key:
                key = secrets.token_urlsafe(32)
            self._signer = TokenSigner(key)
        return self._signer

    @property
    def runner(self) -> EditionRunner:
        if self._runner is None:
            self._runner = EditionRunner(self.settings, self.store, self.signer, clock=self.clock)
        return self._runner

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
