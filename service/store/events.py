"""The event store: the pool, and the transactions taken from it, whose queries are split by area
(keys, appends, reads, idempotency) into modules of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from service.store.appends import Appends, KeyClaim, KnownStateWrite
from service.store.idempotency import IdempotencyKeys
from service.store.keys import Keys
from service.store.pool import Gates, Limits, connection
from service.store.reads import Reads

__all__ = ["KeyClaim", "KnownStateWrite", "Store", "Tx"]


class Store:
    """The pool, and the transactions taken from it, each with bounded waits (store.pool): a
    database that is away or too slow comes out of them as a DatabaseUnavailable or DatabaseBusy."""

    def __init__(self, pool: asyncpg.Pool, limits: Limits | None = None) -> None:
        self.pool = pool
        self.limits = limits or Limits()
        self._gates = Gates()

    @asynccontextmanager
    async def transaction(self, conversation: tuple[str, uuid.UUID] | None = None) -> AsyncIterator[Tx]:
        """A transaction; given the (tenant, id) of the `conversation` it will lock, it takes a
        connection only once no other transaction of this process is waiting for that lock."""
        if conversation is None:
            async with connection(self.pool, self.limits) as conn, conn.transaction():
                yield Tx(conn)
            return
        async with (
            self._gates.hold(conversation, self.limits.lock_timeout),
            connection(self.pool, self.limits) as conn,
            conn.transaction(),
        ):
            yield Tx(conn)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Tx]:
        """A connection for reads that need no transaction of their own."""
        async with connection(self.pool, self.limits) as conn:
            yield Tx(conn)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Tx]:
        """A read-only transaction that sees one consistent state throughout (for audit and export)."""
        async with connection(self.pool, self.limits) as conn, conn.transaction(
            isolation="repeatable_read", readonly=True
        ):
            yield Tx(conn)


class Tx(Keys, Appends, Reads, IdempotencyKeys):
    """Queries on one connection (inside a transaction when taken from `Store.transaction`), each
    area's in a module of its own; history and pending replies take a Tx in their own modules."""
