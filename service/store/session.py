"""Named queries on one connection: the statements of queries.sql run with keyword arguments."""

from __future__ import annotations

from typing import Any, TypeAlias, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.store.queries import Q

# What the store runs its queries on: a connection of its own, or one the pool lends (a proxy).
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

T = TypeVar("T")


class Session:
    """One connection (inside a transaction when the Store opened one) and the named queries run on it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def rows(self, name: str, /, **params: Any) -> list[asyncpg.Record]:
        query = Q[name]
        return await self.conn.fetch(query.sql, *query.args(params))

    async def row(self, name: str, /, **params: Any) -> asyncpg.Record | None:
        query = Q[name]
        return await self.conn.fetchrow(query.sql, *query.args(params))

    async def value(self, name: str, kind: type[T], /, **params: Any) -> T:
        """The first column of the first row, a `kind` as queries.sql describes the query (asyncpg
        cannot know it, and types it Any): the one place a value read from the database is given its type."""
        return cast(T, await self._fetchval(name, params))

    async def value_or_none(self, name: str, kind: type[T], /, **params: Any) -> T | None:
        """As value(), for a query that may return no row or NULL."""
        return cast("T | None", await self._fetchval(name, params))

    async def run(self, name: str, /, **params: Any) -> str:
        """Execute; returns the command's status (`UPDATE 3`)."""
        query = Q[name]
        return await self.conn.execute(query.sql, *query.args(params))

    async def _fetchval(self, name: str, params: dict[str, Any]) -> object:
        query = Q[name]
        return await self.conn.fetchval(query.sql, *query.args(params))


def affected(status: str) -> int:
    """The number of rows a command's status reports (`UPDATE 3` -> 3)."""
    return int(status.split()[-1])
