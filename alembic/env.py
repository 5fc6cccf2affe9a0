"""Alembic environment: runs convtree's SQL migrations over asyncpg, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.store.migrate import MIGRATION_LOCK, sqlalchemy_url


def _run(connection: Connection) -> None:
    # Two replicas starting at once must not both migrate: the second waits, then finds nothing to do.
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    try:
        context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})


async def _main() -> None:
    url = context.config.attributes.get("database_url") or sqlalchemy_url(None)
    engine = create_async_engine(url, poolclass=None)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("convtree migrations run online only: set DATABASE_URL or use the embedded server")
asyncio.run(_main())
