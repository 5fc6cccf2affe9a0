"""Named queries on one connection: the statements of queries.sql run with keyword arguments."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.store.queries import Q


class Session:
    """One connection (inside a transaction when the Store opened one) and the named queries run on it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def rows(self, name: str, /, **params: Any) -> list[asyncpg.Record]:
        query = Q[name]
        return await self.conn.fetch(query.sql, *query.args(params))

    async def row(self, name: str, /, **params: Any) -> asyncpg.Record | None:
        query = Q[name]
        return await self.conn.fetchrow(query.sql, *query.args(params))

    async def value(self, name: str, /, **params: Any) -> Any:
        query = Q[name]
        return await self.conn.fetchval(query.sql, *query.args(params))

    async def run(self, name: str, /, **params: Any) -> str:
        """Execute; returns the command's status (`UPDATE 3`)."""
        query = Q[name]
        return await self.conn.execute(query.sql, *query.args(params))


def affected(status: str) -> int:
    """The number of rows a command's status reports (`UPDATE 3` -> 3)."""
    return int(status.split()[-1])
