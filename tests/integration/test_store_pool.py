"""The store's bounded waits on a real PostgreSQL: what runs out, or goes away, comes out as a
DatabaseBusy or a DatabaseUnavailable, and writers queued for one conversation hold no connection."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from service.domain.errors import DatabaseBusy, DatabaseUnavailable
from service.store.events import Store
from service.store.pool import Limits, open_pool
from tests.postgres import Databases, run


async def _store(url: str, size: int, limits: Limits) -> Store:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=size, server_settings=limits.session_settings())
    assert pool is not None
    return Store(pool, limits)


def test_no_free_connection_in_time_is_database_busy(databases: Databases):
    url = databases.migrated()

    async def go() -> None:
        store = await _store(url, 1, Limits(acquire_timeout=0.2))
        try:
            async with store.reader():
                with pytest.raises(DatabaseBusy):
                    async with store.reader():
                        pass
        finally:
            await store.pool.close()

    run(go())


def test_a_connection_lost_mid_transaction_is_database_unavailable(databases: Databases):
    url = databases.migrated()

    async def go() -> None:
        store = await _store(url, 2, Limits())
        admin = await asyncpg.connect(url)
        try:
            with pytest.raises(DatabaseUnavailable):
                async with store.transaction() as tx:
                    pid = await tx.conn.fetchval("SELECT pg_backend_pid()")
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                    await tx.conn.fetchval("SELECT 1")
            async with store.reader() as tx:  # the pool goes on with a new connection
                assert await tx.conn.fetchval("SELECT 1") == 1
        finally:
            await admin.close()
            await store.pool.close()

    run(go())


def test_writers_queued_for_one_conversation_hold_no_connection(databases: Databases):
    url = databases.migrated()
    key = ("tenant", uuid.uuid4())

    async def go() -> None:
        store = await _store(url, 2, Limits(lock_timeout=0.5))
        try:
            async with store.transaction(key):
                # Queued behind the first writer, without a connection: the second connection
                # stays free for everyone else, and the queued writer gives up at the lock timeout.
                queued = asyncio.create_task(_enter(store, key))
                await asyncio.sleep(0.1)
                async with store.reader() as tx:
                    assert await tx.conn.fetchval("SELECT 1") == 1
                with pytest.raises(DatabaseBusy):
                    await queued
            await _enter(store, key)  # and the conversation's next writer goes straight in
        finally:
            await store.pool.close()

    run(go())


async def _enter(store: Store, key: tuple[str, uuid.UUID]) -> None:
    async with store.transaction(key) as tx:
        await tx.conn.fetchval("SELECT 1")


def test_the_serving_pool_sends_nothing_between_uses_of_a_connection(databases: Databases):
    """asyncpg's default pool sends a reset statement (UNLISTEN, RESET ALL, …) each time a
    connection goes back: one more round trip per request, and per measured append in bench/."""
    url = databases.migrated()

    async def go() -> None:
        pool = await open_pool(url, Limits(lock_timeout=1.5), min_size=1, max_size=1)
        sent: list[str] = []
        try:
            async with pool.acquire() as conn:
                conn.add_query_logger(lambda q: sent.append(q.query))
                assert await conn.fetchval("SELECT 1") == 1
            async with pool.acquire() as conn:
                # the same session, its settings kept
                assert await conn.fetchval("SELECT current_setting('lock_timeout')") == "1500ms"
                assert await conn.fetchval("SELECT current_setting('jit')") == "off"
            assert sent == ["SELECT 1", "SELECT current_setting('lock_timeout')", "SELECT current_setting('jit')"]
        finally:
            await pool.close()

    run(go())
