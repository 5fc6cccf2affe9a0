"""Rebuilding every derived table from the log."""

from __future__ import annotations

from collections.abc import Callable

from service.store import rebuild as from_log
from service.store.events import Store

Report = from_log.Report


async def rebuild(
    store: Store,
    *,
    batch_events: int,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[str, int], None] = lambda step, events: None,
) -> Report:
    """Empty and refill the derived tables in one transaction; writers wait, readers read the old rows."""
    async with store.pool.acquire() as conn:
        return await from_log.rebuild(conn, batch_events=batch_events, on_start=on_start, on_progress=on_progress)
