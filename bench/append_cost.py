"""Where a grouped append's time goes: `python -m bench.append_cost [--samples N]`.

One client, a request at a time, on a fresh database; every line below is taken in turn with the
others of its phase, sample by sample (each round starting one line further on), so that a slow
spell of the machine falls on all of them. Two phases: the lines that commit, then those rolled
back (whose unflushed WAL would otherwise be flushed by the next commit, on another line's time):

- the append use case in this process (service.app.messages.AppendGroup, no HTTP), on the
  server's pool and on asyncpg's default one (which sends a reset statement after each use);
- the grouped statement (queries.sql's append_messages_if_unchanged) sent by hand on a
  connection of its own, one message a time, as the use case sends it: what is left of the use
  case without its Python;
- one INSERT into a copy of `events` (LIKE … INCLUDING ALL: its indexes, no trigger), as the
  benchmark's raw INSERT line makes it;
- inside an open transaction that is rolled back (no commit): the raw INSERT, and the grouped
  statement cut after each of its steps (the steps before it, then a SELECT of what it made),
  so that each step's share is the difference from the line above it; then the whole statement
  with one part left out (NOTIFY, the path digest row, the body row, the summary's UPDATE), and
  with place_message's work given by the statement (its trigger off in that session).

Prints one markdown table (p50 and p90, ms) and the plan counts of the statement's cached plan.
Talks only to the given PostgreSQL (DATABASE_URL), and drops the database it made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvloop

from bench.append import RAW_INSERT_RUNS, RAW_SETUP
from bench.harness import Databases
from service.app import conversations as conversations_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.store.events import Store
from service.store.pool import Limits, open_pool
from service.store.queries import Q

TENANT = "bench-cost"
GROUPED = Q["append_messages_if_unchanged"]
NOTIFY = "pg_notify('convtree_events', encode(sha256(convert_to(c.tenant, 'UTF8')), 'hex'))"
EVENT_COLUMNS = "depth, body_sha256, payload, actor, request_id, created_at, hash)"
EVENT_VALUES = "e.depth, e.body_sha256, e.payload::json, e.actor, e.request_id, e.created_at, e.hash\n"


def _edit(*pairs: tuple[str, str]) -> str:
    """The grouped statement with each (old, new) replaced: the statement must hold each `old` once
    (a probe of a statement that changed under it fails here, not silently)."""
    sql = GROUPED.sql
    for old, new in pairs:
        if sql.count(old) != 1:
            raise RuntimeError(f"append_messages_if_unchanged no longer holds {old!r} once")
        sql = sql.replace(old, new)
    return sql


def _cut(before: str, select: str) -> str:
    """The grouped statement's steps up to `before`, then `select` from them."""
    _edit((before, before))
    return GROUPED.sql[: GROUPED.sql.index(before)] + ")\n" + select


STEPS = {
    "1. its 23 arrays, unnested (CTE batch)": _cut(
        "), feed AS", "SELECT tenant, conversation_id, 0::bigint AS seq FROM batch"
    ),
    "2. + the tenant's feed lock and the conversation's row lock": _cut(
        "), unchanged AS", "SELECT l.tenant, l.conversation_id, 0::bigint AS seq FROM locked l"
    ),
    "3. + the check of the known state, nextval": _cut(
        "), claimed AS", "SELECT u.tenant, u.conversation_id, u.seq FROM unchanged u"
    ),
    "4. + the Idempotency-Key claim (none), going": _cut(
        "), event_rows AS", "SELECT u.tenant, u.conversation_id, u.seq FROM going u"
    ),
    "5. + the parent's path digest check": _cut(
        "), body_rows AS", "SELECT u.tenant, u.conversation_id, u.seq, (SELECT count(*) FROM event_rows) FROM going u"
    ),
    "6. + the writes: the whole statement": GROUPED.sql,
}
LEFT_OUT = {
    "without pg_notify": _edit((NOTIFY, "NULL::text")),
    "without the body row": _edit(
        (
            "SELECT u.family_id, u.message_id, u.content, u.digest_key FROM going u",
            "SELECT u.family_id, u.message_id, u.content, u.digest_key FROM going u WHERE false",
        )
    ),
    "without the summary's UPDATE": GROUPED.sql[: GROUPED.sql.index("UPDATE conversations c")]
    + "SELECT u.tenant, u.conversation_id, u.seq FROM going u",
    # The run given by the statement (not what place_message would give: a timing, never kept).
    "place_message's work given, its trigger off": _edit(
        (EVENT_COLUMNS, EVENT_COLUMNS[:-1] + ", run_id, parent_run_id)"),
        (EVENT_VALUES, EVENT_VALUES[:-1] + ", e.message_id, e.message_id\n"),
    ),
}


class Chain:
    """One conversation appended to by the grouped statement sent by hand, a message a time, as
    the use case fills it (random digests and hashes: the database checks neither)."""

    def __init__(self, conn: asyncpg.Connection, conversation_id: uuid.UUID, family_id: uuid.UUID) -> None:
        self.conn = conn
        self.conversation_id = conversation_id
        self.family_id = family_id
        self.head: uuid.UUID | None = None
        self.depth = -1
        self.count = 0
        self.seq = 0
        self.sql = GROUPED.sql
        self.path = True  # step(): the message with a path digest

    async def start(self) -> None:
        self.seq = await self.conn.fetchval(
            "SELECT last_seq FROM conversations WHERE conversation_id = $1", self.conversation_id
        )

    def args(self, path: bool = True) -> tuple[uuid.UUID, tuple[Any, ...]]:
        message_id = uuid.uuid4()
        values: dict[str, Any] = {
            "tenants": [TENANT], "conversation_ids": [self.conversation_id], "family_ids": [self.family_id],
            "message_ids": [message_id], "parent_ids": [self.head], "roles": ["user"], "depths": [self.depth + 1],
            "body_sha256s": [os.urandom(32)], "payloads": ['{"metadata":{}}'], "actors": ["bench"],
            "request_ids": [uuid.uuid4().hex], "created_ats": [datetime.now(UTC)], "hashes": [os.urandom(32)],
            "contents": ["x" * 400], "message_counts": [self.count + 1], "leaf_counts": [1],
            "known_seqs": [self.seq], "digest_keys": [os.urandom(32)], "keys": [None], "fingerprints": [None],
            "response_heads": [None], "response_tails": [None], "path_digests": [os.urandom(32) if path else None],
        }  # fmt: skip
        return message_id, GROUPED.args(values)

    async def append(self) -> None:
        message_id, args = self.args()
        rows = await self.conn.fetch(self.sql, *args)
        if len(rows) != 1:
            raise RuntimeError(f"the grouped statement wrote {len(rows)} rows")
        self.seq, self.head, self.depth, self.count = rows[0]["seq"], message_id, self.depth + 1, self.count + 1

    async def step(self) -> float:
        """The statement (or its cut) in a transaction rolled back, so that nothing moves on: the
        statement's own time, without BEGIN and ROLLBACK."""
        _, args = self.args(self.path)
        async with self.conn.transaction():
            t0 = time.perf_counter()
            await self.conn.fetch(self.sql, *args)
            took = time.perf_counter() - t0
            raise _Rollback(took)


class _Rollback(Exception):
    """Ends a measured transaction, carrying the time of the statement in it."""

    def __init__(self, took: float) -> None:
        super().__init__()
        self.took = took


class Raw:
    """The benchmark's raw INSERT: one events-shaped row into the copy, one chain a connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.conversation = uuid.uuid4()
        self.last: uuid.UUID | None = None
        self.root: uuid.UUID | None = None
        self.depth = 0

    async def insert(self) -> None:
        message_id = uuid.uuid4()
        run = self.root or message_id
        await self.conn.execute(
            RAW_INSERT_RUNS, "bench", self.conversation, message_id, self.last, "user", self.depth,
            os.urandom(32), uuid.uuid4().hex, datetime.now(UTC), os.urandom(32), run, self.root,
        )  # fmt: skip
        self.root, self.last, self.depth = run, message_id, self.depth + 1

    async def in_transaction(self) -> float:
        async with self.conn.transaction():
            t0 = time.perf_counter()
            await self.insert()
            raise _Rollback(time.perf_counter() - t0)


async def _timed(op: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    try:
        await op()
    except _Rollback as done:
        return done.took
    return time.perf_counter() - t0


async def _rounds(lines: list[tuple[str, Callable[[], Awaitable[object]]]], samples: int) -> dict[str, list[float]]:
    """`samples` rounds of `lines` (after 30 to warm up), each round starting one line further on,
    so that no line always follows the same one."""
    times: dict[str, list[float]] = {name: [] for name, _ in lines}
    for i in range(samples + 30):
        for k in range(len(lines)):
            name, op = lines[(i + k) % len(lines)]
            took = await _timed(op)
            if i >= 30:
                times[name].append(took)
    return times


async def measure(url: str, samples: int) -> list[tuple[str, list[float]]]:
    caller = Caller(tenant=TENANT, actor="bench")
    served = await open_pool(url, Limits(), min_size=1, max_size=1)
    default = await asyncpg.create_pool(url, min_size=1, max_size=1, server_settings={"jit": "off"})
    assert default is not None
    conns: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(url, server_settings={"jit": "off"})
        conns.append(conn)
        return conn

    async def conversation() -> tuple[uuid.UUID, uuid.UUID]:
        async with Store(served).transaction() as tx:
            made = await conversations_app.create(tx, caller, conversations_app.NewConversation(title="cost"))
        family = await served.fetchval(
            "SELECT family_id FROM conversations WHERE conversation_id = $1", made.conversation.id
        )
        return made.conversation.id, family

    def use_case(pool: asyncpg.Pool, conversation_id: uuid.UUID) -> Callable[[], Awaitable[None]]:
        group = messages_app.AppendGroup(Store(pool))

        async def op() -> None:
            await group.append(caller, conversation_id, messages_app.NewMessage(role="user", content="x" * 400))

        return op

    async def chain(sql: str | None = None, setup: str | None = None, path: bool = True) -> Chain:
        c = Chain(await connect(), *(await conversation()))
        await c.start()
        for _ in range(3):  # a parent with a path digest, in a run
            await c.append()
        if sql is not None:
            c.sql = sql
        if setup is not None:
            await c.conn.execute(setup)
        c.path = path
        return c

    try:
        raw_conn = await connect()
        for statement in RAW_SETUP:
            await raw_conn.execute(statement)
        raw, raw_tx, ping = Raw(raw_conn), Raw(await connect()), await connect()
        whole = await chain()

        async def select_one() -> None:
            await ping.fetchval("SELECT 1")

        served_id, _ = await conversation()
        default_id, _ = await conversation()
        lines: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("use case in-process, the server's pool", use_case(served, served_id)),
            ("use case in-process, asyncpg's default pool (reset after each use)", use_case(default, default_id)),
            ("grouped statement alone (asyncpg, autocommit)", whole.append),
            ("raw INSERT (autocommit)", raw.insert),
            ("SELECT 1 (a round trip)", select_one),
            ("in an open transaction, rolled back: raw INSERT", raw_tx.in_transaction),
        ]  # fmt: skip
        for name, sql in STEPS.items():
            lines.append((f"in a transaction: {name}", (await chain(sql)).step))
        for name, sql in LEFT_OUT.items():
            setup = "SET session_replication_role = replica" if "trigger off" in name else None
            lines.append((f"in a transaction: whole statement {name}", (await chain(sql, setup)).step))
        lines.append(("in a transaction: whole statement without the path digest row", (await chain(path=False)).step))
        # Two phases, each line taken in turn with the others of its phase: the statements rolled
        # back leave WAL unflushed, which the next commit would flush for them.
        committed = [line for line in lines if not line[0].startswith("in a")]
        rolled_back = [line for line in lines if line[0].startswith("in a")]
        times = {name: t for phase in (committed, rolled_back) for name, t in (await _rounds(phase, samples)).items()}
        plans = await whole.conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", GROUPED.sql
        )
        print(f"\nappend_messages_if_unchanged's cached plan: {dict(plans or {})}")
        return [(name, times[name]) for name, _ in lines]
    finally:
        for conn in conns:
            await conn.close()
        await served.close()
        await default.close()


def table(results: list[tuple[str, list[float]]]) -> str:
    out = ["| line (one client, in turn with the others) | p50 ms | p90 ms |", "|---|---:|---:|"]
    for name, t in results:
        s = sorted(t)
        out.append(f"| {name} | {statistics.median(s) * 1000:.3f} | {s[int(0.9 * (len(s) - 1))] * 1000:.3f} |")
    return "\n".join(out)


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.append_cost", description=__doc__)
    url = os.environ.get("DATABASE_URL")
    p.add_argument("--database-url", default=url, required=not url, help="an admin URL (default: DATABASE_URL)")
    p.add_argument("--samples", type=int, default=500)
    args = p.parse_args(argv)
    dbs = Databases(args.database_url)
    await dbs.prepare()
    try:
        url = await dbs.fresh("append_cost")
        print(f"Load average at the start: {os.getloadavg()[0]:.2f}")
        results = await measure(url, args.samples)
        print(table(results))
        print(f"Load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    uvloop.run(main())
