"""Rebuilding the derived tables from the log: a list of named steps run in one transaction.

Each step is one derived table, described by named queries in queries.sql: `lock` keeps writers off
it (readers go on reading the old rows until the rebuild commits), `plan` lists its units of work
with the number of events each covers (the unit of progress), `clear` and `fill` replace the rows
of a batch of units (`fill` with one set-based INSERT … SELECT), and `prune` drops rows of units the
log no longer names. To rebuild another derived table, append a Step to STEPS.

The transaction is REPEATABLE READ and takes every step's lock before its first read, so the whole
rebuild sees one consistent log. The rebuild never locks `events` itself: every writer also writes
`conversations` in the statement that inserts its events, so holding that table keeps the log still.

One unit that cannot be folded does not stop the others: each batch is replaced in a savepoint,
and a batch that fails is replaced again one unit at a time, each in its own savepoint. A unit that
still fails keeps the rows it had before the rebuild, and is named in the report (whose caller
exits non-zero); every other unit is rebuilt, and the whole commits as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
import msgspec

from service.store.session import Connection, Session, affected


class Step(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    lock: str  # each a query name in queries.sql
    plan: str  # rows (key, events), in a stable order
    clear: str  # :keys, an array of keys; deletes their rows
    fill: str  # :keys, an array of keys; returns the INSERT's status
    prune: str  # :keys, every key planned; deletes the rows of any other


STEPS: tuple[Step, ...] = (
    Step(
        name="conversations",
        lock="rebuild_conversations_lock",
        plan="rebuild_conversations_plan",
        clear="rebuild_conversations_clear",
        fill="rebuild_conversations_fill",
        prune="rebuild_conversations_prune",
    ),
)


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A unit the rebuild could not fold: its rows stay as they were."""

    step: str
    key: str
    error: str


class Report(msgspec.Struct, frozen=True, kw_only=True):
    events: int  # events folded, summed over the steps (each step reads the events it derives from)
    rows: dict[str, int]  # rows written, per step
    failures: list[Failure] = []


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
    conn: Connection,
    *,
    steps: Sequence[Step] = STEPS,
    batch_events: int = 200_000,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[str, int], None] = lambda step, events: None,
) -> Report:
    """Refill every step's table from the log, all in one transaction; a unit that cannot be
    folded keeps its old rows and is reported (see the module's docstring).

    `on_start` gets the total number of events the steps will fold; `on_progress` gets a step's
    name and the events each batch just covered.
    """
    failures: list[Failure] = []
    session = Session(conn)
    async with conn.transaction(isolation="repeatable_read"):
        for step in steps:
            await session.run(step.lock)
        plans = [(step, await session.rows(step.plan)) for step in steps]
        on_start(sum(unit["events"] for _, units in plans for unit in units))
        rows: dict[str, int] = {}
        for step, units in plans:
            await session.run(step.prune, keys=[unit["key"] for unit in units])
            written = 0
            for keys, events in batches(units, batch_events):
                try:
                    written += await _replace(session, step, keys)
                except asyncpg.PostgresError:
                    for key in keys:
                        try:
                            written += await _replace(session, step, [key])
                        except asyncpg.PostgresError as exc:
                            failures.append(Failure(step=step.name, key=str(key), error=_describe(exc)))
                on_progress(step.name, events)
            rows[step.name] = written
    events = sum(unit["events"] for _, units in plans for unit in units)
    return Report(events=events, rows=rows, failures=failures)


async def _replace(session: Session, step: Step, keys: list[Any]) -> int:
    """Replace the rows of `keys` in a savepoint: all of them, or (on an error) none."""
    async with session.conn.transaction():
        await session.run(step.clear, keys=keys)
        return affected(await session.run(step.fill, keys=keys))


def _describe(exc: asyncpg.PostgresError) -> str:
    detail = getattr(exc, "detail", None)
    return f"{exc.sqlstate} {exc}" + (f" ({detail})" if detail else "")
