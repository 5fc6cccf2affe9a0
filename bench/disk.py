"""Figure 4: bytes on disk per message, from every relation's growth while N messages are appended over HTTP,
beside the same messages in the plain table a simple store would keep them in (the raw chain)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec

from bench.append import append_bodies, create_conversations, http_client
from bench.harness import ROOT, UVICORN, Databases, ServerProcess, issue_key

# The raw chain: a message chain as a simple store keeps it, one row per message with its text and
# parent, the primary key its only index (a recursive read of a path walks it from child to parent).
RAW_TABLE = "bench_raw_messages"
RAW_SETUP = f"""
CREATE TABLE {RAW_TABLE} (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL,
    parent_id        uuid,
    role             text NOT NULL,
    content          text NOT NULL,
    created_at       timestamptz NOT NULL
)"""
RAW_INSERT = f"""
INSERT INTO {RAW_TABLE} (id, conversation_id, parent_id, role, content, created_at)
VALUES ($1, $2, $3, $4, $5, $6)"""

# Every part of every table in the public schema: heap (with its free-space and visibility maps),
# TOAST (with its index), and each index. Tables added later show up by themselves.
SIZES = """
SELECT t.relname AS table_name, 'heap' AS part,
       pg_table_size(t.oid) - COALESCE(pg_total_relation_size(NULLIF(t.reltoastrelid, 0)), 0) AS bytes
  FROM pg_class t
 WHERE t.relnamespace = 'public'::regnamespace AND t.relkind = 'r'
UNION ALL
SELECT t.relname, 'TOAST', pg_total_relation_size(t.reltoastrelid)
  FROM pg_class t
 WHERE t.relnamespace = 'public'::regnamespace AND t.relkind = 'r' AND t.reltoastrelid <> 0
UNION ALL
SELECT t.relname, i.relname, pg_total_relation_size(i.oid)
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
 WHERE t.relnamespace = 'public'::regnamespace AND t.relkind = 'r'
"""


# How many times each index was scanned (the statistics of the database, as flushed so far): which
# indexes the appends themselves use.
SCANS = """
SELECT s.relname AS table_name, s.indexrelname AS part, s.idx_scan AS scans
  FROM pg_stat_user_indexes s
 WHERE s.schemaname = 'public'
"""


# Heap pages that hold at least one row. A table's file also holds pages PostgreSQL added ahead of
# need when several writers extended it at once (up to 512 at a time): bytes on disk, but slack
# that the next rows fill, so the per-message figure counts pages in use.
PAGES_IN_USE = "SELECT count(DISTINCT (ctid::text::point)[0]) FROM {table}"


@dataclass(frozen=True)
class Part:
    table: str
    part: str
    bytes: int  # growth of the files on disk
    used: int  # for a heap, growth of the pages holding rows; for the rest, of the files
    scans: int | None = None  # for an index, its scans while the messages were written


@dataclass(frozen=True)
class DiskFigure:
    messages: int
    conversations: int
    chars: int
    seconds: float
    parts: list[Part]  # growth per relation part, largest first, zero growth left out

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts)

    @property
    def used(self) -> int:
        return sum(p.used for p in self.parts)

    @property
    def per_message(self) -> float:
        """Bytes in use per message."""
        return self.used / self.messages

    @property
    def per_message_on_disk(self) -> float:
        return self.total / self.messages


@dataclass(frozen=True)
class DiskComparison:
    """Figure 4 for this tree, the raw chain of the same messages, and (`--against`) other trees."""

    own: DiskFigure
    raw: DiskFigure
    against: list[tuple[Path, DiskFigure]]

    @property
    def ratio(self) -> float:
        """convtree's bytes per message ÷ the raw chain's (issue 14, goal 4)."""
        return self.own.per_message / self.raw.per_message


async def sizes(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    return {(r["table_name"], r["part"]): r["bytes"] for r in await conn.fetch(SIZES)}


async def scans(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    # Statistics a backend has not flushed yet are flushed when it ends or goes idle (within a
    # second): the writers have ended by the time this is read.
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return {(r["table_name"], r["part"]): r["scans"] for r in await conn.fetch(SCANS)}


async def heap_in_use(conn: asyncpg.Connection, sizes: dict[tuple[str, str], int]) -> dict[str, int]:
    block = int(await conn.fetchval("SELECT current_setting('block_size')"))
    used = {}
    for table, part in sizes:
        if part == "heap":
            # The table name comes from the catalog and is quoted by PostgreSQL itself.
            query = await conn.fetchval(
                "SELECT format($1::text, quote_ident($2::text))", PAGES_IN_USE.replace("{table}", "%s"), table
            )
            used[table] = int(await conn.fetchval(query)) * block
    return used


def _growth(
    before: dict[tuple[str, str], int],
    before_used: dict[str, int],
    after: dict[tuple[str, str], int],
    after_used: dict[str, int],
    scanned: dict[tuple[str, str], int],
) -> list[Part]:
    parts = []
    for (t, p), size in after.items():
        grown = size - before.get((t, p), 0)
        used = after_used[t] - before_used.get(t, 0) if p == "heap" else grown
        parts.append(Part(t, p, grown, used, scanned.get((t, p))))
    return sorted((p for p in parts if p.bytes or p.used), key=lambda p: -p.used)


async def figure_disk_compared(
    databases: Databases,
    rng: random.Random,
    messages: int,
    per_conversation: int,
    clients: int,
    against: list[Path],
    chars: int = 400,
) -> DiskComparison:
    """Figure 4 on this tree, on each tree of `against` (a database migrated by its own code), and
    the raw chain, all with the same message bodies, so that each ratio is one run's."""
    bodies = append_bodies(rng, chars=chars)
    own = await figure_disk(databases, bodies, messages, per_conversation, clients, chars)
    others = []
    for i, tree in enumerate(against):
        await databases.prepare_tree(tree)
        others.append(
            (tree, await figure_disk(databases, bodies, messages, per_conversation, clients, chars, tree, f"disk{i}"))
        )
    raw = await figure_raw_disk(databases, bodies, messages, per_conversation, clients, chars)
    return DiskComparison(own, raw, others)


async def figure_raw_disk(
    databases: Databases, bodies: list[bytes], messages: int, per_conversation: int, clients: int, chars: int
) -> DiskFigure:
    """The same messages as figure_disk's, inserted by asyncpg into RAW_TABLE one autocommitted row
    at a time by `clients` connections in the same order (each conversation a chain, by one client)."""
    url = await databases.fresh("disk_raw")
    conversations = max(1, messages // per_conversation)
    said = [msgspec.json.decode(b) for b in bodies]
    conn = await asyncpg.connect(url)
    conns: list[asyncpg.Connection] = []
    try:
        await conn.execute(RAW_SETUP)
        before = await sizes(conn)
        before_used = await heap_in_use(conn, before)
        scans_before = await scans(conn)
        conns = list(await asyncio.gather(*(asyncpg.connect(url) for _ in range(clients))))
        ids = [uuid.uuid4() for _ in range(conversations)]
        quota = {cid: messages // conversations + (1 if i < messages % conversations else 0) for i, cid in enumerate(ids)}

        async def client(i: int) -> None:
            mine = ids[i::clients]
            body = itertools.cycle(said[i:] + said[:i])
            left = {cid: quota[cid] for cid in mine}
            last: dict[uuid.UUID, uuid.UUID | None] = dict.fromkeys(mine)
            while left:
                for cid in list(left):
                    message = next(body)
                    message_id = uuid.uuid4()
                    await conns[i].execute(
                        RAW_INSERT, message_id, cid, last[cid], message["role"], message["content"], datetime.now(UTC)
                    )
                    last[cid] = message_id
                    left[cid] -= 1
                    if not left[cid]:
                        del left[cid]

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - t0
        await asyncio.gather(*(c.close() for c in conns))
        conns = []
        after = await sizes(conn)
        after_used = await heap_in_use(conn, after)
        scanned = _scanned(scans_before, await scans(conn))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
        await conn.close()
    return DiskFigure(messages, conversations, chars, seconds, _growth(before, before_used, after, after_used, scanned))


def _scanned(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: n - before.get(k, 0) for k, n in after.items()}


async def figure_disk(
    databases: Databases,
    bodies: list[bytes],
    messages: int,
    per_conversation: int,
    clients: int,
    chars: int = 400,
    root: Path = ROOT,
    purpose: str = "disk",
) -> DiskFigure:
    """`messages` appends, `per_conversation` to each conversation, written by `clients` at once
    (each conversation by one client), so the indexes grow in the order a busy service grows them;
    served by the convtree of the source tree `root`."""
    url = await databases.fresh(purpose, root)
    key = await issue_key(url, "bench-disk", root)
    conversations = max(1, messages // per_conversation)
    conn = await asyncpg.connect(url)
    try:
        before = await sizes(conn)
        before_used = await heap_in_use(conn, before)
        scans_before = await scans(conn)
        async with ServerProcess(replace(UVICORN, root=root), url) as server:
            sessions = [http_client(server.base_url, key) for _ in range(clients)]
            try:
                ids = await create_conversations(sessions[0], conversations)
                quota = {
                    cid: messages // conversations + (1 if i < messages % conversations else 0)
                    for i, cid in enumerate(ids)
                }

                async def client(i: int) -> None:
                    mine = ids[i::clients]
                    body = itertools.cycle(bodies[i:] + bodies[:i])
                    left = {cid: quota[cid] for cid in mine}
                    while (
                        left
                    ):  # round-robin over this client's conversations, like a user with several chats
                        for cid in list(left):
                            r = await sessions[i].post(
                                f"/v1/conversations/{cid}/messages", content=next(body)
                            )
                            if r.status_code != 201:
                                raise RuntimeError(f"append: HTTP {r.status_code}: {r.text[:300]}")
                            left[cid] -= 1
                            if not left[cid]:
                                del left[cid]

                t0 = time.perf_counter()
                await asyncio.gather(*(client(i) for i in range(clients)))
                seconds = time.perf_counter() - t0
            finally:
                await asyncio.gather(*(s.aclose() for s in sessions))
        written = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'message_appended'")
        if written != messages:
            raise RuntimeError(f"{written} messages in the log, {messages} appended")
        after = await sizes(conn)
        after_used = await heap_in_use(conn, after)
        scanned = _scanned(scans_before, await scans(conn))
    finally:
        await conn.close()
    return DiskFigure(messages, conversations, chars, seconds, _growth(before, before_used, after, after_used, scanned))
