"""What PostgreSQL knows and does: whether tables were ever analyzed, and the plan of message_path's body."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import asyncpg

TABLES = ("events", "bodies", "conversations")
# Plan nodes that read more than the path needs: a scan of a whole table, a join that reads all of
# one side, or a Materialize that keeps a whole family in memory and filters it again at every
# level (what a walk by parent pointers turned into on a small never-analyzed table). An
# index-driven plan reads each run on the path with one range scan and steps between runs by key.
_NOT_INDEX_DRIVEN = (
    "Seq Scan", "Hash Join", "Merge Join", "Bitmap Heap Scan", "Bitmap Index Scan", "Materialize",
    "Rows Removed by Join Filter",
)  # fmt: skip


async def never_analyze(conn: asyncpg.Connection) -> None:
    """Keep autovacuum away from a fresh database's tables, so a measurement of the never-analyzed
    case stays one however long it takes (an autoanalyze may otherwise land in the middle of it)."""
    for table in TABLES:
        # Table names come from the constant above, never from input.
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")


async def analyze(conn: asyncpg.Connection) -> None:
    for table in TABLES:
        await conn.execute(f"ANALYZE {table}")


@dataclass(frozen=True)
class Freshness:
    """pg_stat_user_tables' word on whether any table was ever analyzed, by hand or by autovacuum."""

    analyzed: dict[str, bool]

    @property
    def never_analyzed(self) -> bool:
        return not any(self.analyzed.values())

    def text(self) -> str:
        if self.never_analyzed:
            return "last_analyze and last_autoanalyze NULL for " + ", ".join(self.analyzed)
        return "analyzed: " + ", ".join(t for t, a in self.analyzed.items() if a)


async def freshness(conn: asyncpg.Connection) -> Freshness:
    rows = await conn.fetch(
        """
        SELECT relname, last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL AS analyzed
          FROM pg_stat_user_tables
         WHERE relname = ANY($1::text[])
         ORDER BY relname
        """,
        list(TABLES),
    )
    return Freshness({r["relname"]: r["analyzed"] for r in rows})


@dataclass(frozen=True)
class PlanCheck:
    index_driven: bool  # index scans by key and by run only: no scans of whole tables or families
    offending: list[str]  # the plan lines that say otherwise
    text: str


# What a plain (unforked) conversation's walk passes for each of message_path's parameters, by
# name; any other parameter is passed as NULL ("no such thing"), so the figures survive the
# function gaining parameters.
_UNBOUNDED = 2**63 - 1


def _argument(name: str, family: uuid.UUID, conversation: uuid.UUID, message: uuid.UUID) -> object:
    known = {"p_family": family, "p_conversation": conversation, "p_message": message}
    if name in known:
        return known[name]
    if "upto" in name:
        return _UNBOUNDED
    return None


async def _function(conn: asyncpg.Connection) -> asyncpg.Record:
    fn = await conn.fetchrow(
        """
        SELECT p.prosrc, p.proconfig, p.proargnames[1:p.pronargs] AS names,
               ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t) AS types
          FROM pg_proc p
         WHERE p.proname = 'message_path' AND p.pronamespace = 'public'::regnamespace
        """
    )
    if fn is None:
        raise RuntimeError("message_path is not in this database")
    return fn


async def message_path_call(
    conn: asyncpg.Connection, family: uuid.UUID, conversation: uuid.UUID, message: uuid.UUID, select: str
) -> tuple[str, list[object]]:
    """`SELECT <select> FROM message_path(…)` for the walk from `message`, and its arguments."""
    fn = await _function(conn)
    # The text is made from pg_proc's own type names and $n placeholders only.
    placeholders = ", ".join(f"${i}::{t}" for i, t in enumerate(fn["types"], start=1))
    args = [_argument(n, family, conversation, message) for n in fn["names"]]
    return f"SELECT {select} FROM message_path({placeholders})", args


async def explain_message_path(
    conn: asyncpg.Connection, family: uuid.UUID, conversation: uuid.UUID, message: uuid.UUID
) -> PlanCheck:
    """EXPLAIN ANALYZE the body of message_path as the function runs it: the same planner settings
    (its SET clauses), and a generic plan, as PL/pgSQL's cached plan becomes. EXPLAIN of a call to
    the function would show only a Function Scan."""
    fn = await _function(conn)
    # A PL/pgSQL body: its one statement is the query between RETURN QUERY and END.
    body = fn["prosrc"].split("RETURN QUERY", 1)[1]
    body = body[: body.rindex("END;")].strip().removesuffix(";")
    for position, name in enumerate(fn["names"], start=1):
        body = re.sub(rf"\b{re.escape(name)}\b", f"${position}", body)
    types = ", ".join(fn["types"])
    args = [_argument(n, family, conversation, message) for n in fn["names"]]
    async with conn.transaction():
        for setting in fn["proconfig"] or []:
            name, _, value = setting.partition("=")
            await conn.execute("SELECT set_config($1, $2, true)", name, value)
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # The body is the function's own text from pg_proc with its parameters renumbered.
        await conn.execute(f"PREPARE bench_message_path({types}) AS {body}")
        try:
            # EXECUTE under EXPLAIN takes no bind parameters, so PostgreSQL quotes each value itself.
            literals = [
                await conn.fetchval(
                    "SELECT quote_nullable($1::text) || '::' || $2", None if a is None else str(a), t
                )
                for a, t in zip(args, fn["types"], strict=True)
            ]
            rows = await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE bench_message_path({', '.join(literals)})"
            )
        finally:
            await conn.execute("DEALLOCATE bench_message_path")
    lines = [r[0] for r in rows]
    offending = [line.strip() for line in lines if any(marker in line for marker in _NOT_INDEX_DRIVEN)]
    return PlanCheck(not offending, offending, "\n".join(lines))
