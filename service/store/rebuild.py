"""Rebuilding the derived tables from the log: a list of named steps run in one transaction.

Each step is one derived table, described by four named queries in queries.sql: `lock` keeps
writers off it (readers go on reading the old rows until the rebuild commits), `clear` empties it,
`plan` lists its units of work with the number of events each covers (the unit of progress), and
`fill` rebuilds the rows of a batch of units with one set-based INSERT … SELECT. To rebuild another
derived table, append a Step to STEPS.

The transaction is REPEATABLE READ and takes every step's lock before its first read, so the whole
rebuild sees one consistent log. The rebuild never locks `events` itself: every writer also writes
`conversations` in the statement that inserts its events, so holding that table keeps the log still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
import msgspec

from service.store.queries import Q


class Step(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    lock: str  # each a query name in queries.sql
    clear: str
    plan: str  # rows (key, events), in a stable order
    fill: str  # $1: an array of keys; returns the INSERT's status


STEPS: tuple[Step, ...] = (
    Step(
        name="conversations",
        lock="rebuild_conversations_lock",
        clear="rebuild_conversations_clear",
        plan="rebuild_conversations_plan",
        fill="rebuild_conversations_fill",
    ),
)


class Report(msgspec.Struct, frozen=True, kw_only=True):
    events: int  # events folded, summed over the steps (each step reads the events it derives from)
    rows: dict[str, int]  # rows written, per step


def batches(units: Sequence[asyncpg.Record], batch_events: int) -> Iterator[tuple[list[Any], int]]:
    """Group units into batches of about `batch_events` events (a unit bigger than that goes alone)."""
    keys: list[Any] = []
    events = 0
    for unit in units:
        if keys and events + unit["events"] > batch_events:
            yield keys, events
            keys, events = [], 0
        keys.append(unit["key"])
        events += unit["events"]
    if keys:
        yield keys, events


async def rebuild(
    conn: asyncpg.Connection,
    *,
    steps: Sequence[Step] = STEPS,
    batch_events: int = 200_000,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[str, int], None] = lambda step, events: None,
) -> Report:
    """Empty and refill every step's table from the log, all in one transaction.

    `on_start` gets the total number of events the steps will fold; `on_progress` gets a step's
    name and the events each batch just covered.
    """
    async with conn.transaction(isolation="repeatable_read"):
        for step in steps:
            await conn.execute(Q[step.lock])
        plans = [(step, await conn.fetch(Q[step.plan])) for step in steps]
        on_start(sum(unit["events"] for _, units in plans for unit in units))
        rows: dict[str, int] = {}
        for step, units in plans:
            await conn.execute(Q[step.clear])
            written = 0
            for keys, events in batches(units, batch_events):
                status = await conn.execute(Q[step.fill], keys)
                written += int(status.split()[-1])
                on_progress(step.name, events)
            rows[step.name] = written
    return Report(events=sum(unit["events"] for _, units in plans for unit in units), rows=rows)
