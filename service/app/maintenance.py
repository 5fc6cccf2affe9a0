"""Completing an erasure on disk: PostgreSQL keeps a deleted row's bytes until VACUUM removes them."""

from __future__ import annotations

import msgspec

from service.store import maintenance
from service.store.events import Store


class Vacuumed(msgspec.Struct, frozen=True, kw_only=True):
    full: bool
    bytes_before: int
    bytes_after: int


async def vacuum(store: Store, *, full: bool) -> Vacuumed:
    """VACUUM the tables that hold message content, on a connection of its own (never in a
    transaction); `store` must connect as the tables' owner."""
    async with store.pool.acquire() as conn:
        before = await maintenance.body_tables_size(conn)
        await maintenance.vacuum_bodies(conn, full=full)
        after = await maintenance.body_tables_size(conn)
    return Vacuumed(full=full, bytes_before=before, bytes_after=after)
