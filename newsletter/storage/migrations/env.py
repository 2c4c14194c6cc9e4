"""Alembic environment: runs migrations on the engine the service passes in."""

from __future__ import annotations

from alembic import context

from newsletter.storage.schema import metadata

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if connection.dialect.name == "sqlite":
        # A revision that rebuilds a referenced table (0006) turns foreign keys off on this
        # pooled connection; the service relies on them, so they are on again before it is reused.
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
