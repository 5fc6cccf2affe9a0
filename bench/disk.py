"""Figure 4: bytes on disk per message, from every relation's growth while N messages are appended over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

import asyncpg

from bench.append import append_bodies, create_conversations, http_client
from bench.harness import UVICORN, Databases, ServerProcess, issue_key

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


async def sizes(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    return {(r["table_name"], r["part"]): r["bytes"] for r in await conn.fetch(SIZES)}


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


async def figure_disk(
    databases: Databases,
    rng: random.Random,
    messages: int,
    per_conversation: int,
    clients: int,
    chars: int = 400,
) -> DiskFigure:
    """`messages` appends, `per_conversation` to each conversation, written by `clients` at once
    (each conversation by one client), so the indexes grow in the order a busy service grows them."""
    url = await databases.fresh("disk")
    key = await issue_key(url, "bench-disk")
    conversations = max(1, messages // per_conversation)
    bodies = append_bodies(rng, chars=chars)
    conn = await asyncpg.connect(url)
    try:
        before = await sizes(conn)
        before_used = await heap_in_use(conn, before)
        async with ServerProcess(UVICORN, url) as server:
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
    finally:
        await conn.close()
    parts = []
    for (t, p), size in after.items():
        grown = size - before.get((t, p), 0)
        used = after_used[t] - before_used.get(t, 0) if p == "heap" else grown
        parts.append(Part(t, p, grown, used))
    parts = sorted((p for p in parts if p.bytes or p.used), key=lambda p: -p.used)
    return DiskFigure(messages, conversations, chars, seconds, parts)
