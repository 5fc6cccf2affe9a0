"""Auto-threading lookup: `python -m bench.threads [--database-url URL] [--small 10] [--large 100000]`.

What it measures: the statement auto-threading runs to find the conversation a resent history
continues (queries.sql `find_thread`, through Tx.find_thread) for a 41-message history (a stored
40-message path and the new question), in one tenant holding `--small` and then `--large`
conversations of 40 messages each. The matched conversation is written through convtree's use
cases; the others' paths only, into message_paths by one SQL statement (random digests): the
lookup reads no other event than the one it finds, and writing 4,000,000 messages through the API
would take hours. Each size is
measured on its own fresh database, analyzed, after a warm-up; the median of `--lookups` lookups
over one connection is the figure, and the ratio large ÷ small the goal (≤ 1.5). Prints the
figures as markdown, then the EXPLAIN (ANALYZE, BUFFERS) of the lookup at the large size, which must
be index-driven: one probe of message_paths_lookup per digest, no scan of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

import asyncpg

from service.app import conversations as conversations_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.domain.message import Utterance
from service.domain.threads import prefix_digests
from service.store.events import Store, Tx
from service.store.migrate import upgrade
from service.store.queries import Q

TENANT = "bench"
DEPTH = 40


def history() -> list[Utterance]:
    said: list[Utterance] = []
    for turn in range(DEPTH // 2):
        said.append(Utterance(role="user", content=f"question {turn}: how does this continue?"))
        said.append(Utterance(role="assistant", content=f"answer {turn}: like this, at some length."))
    said.append(Utterance(role="user", content="the new question"))
    return said


async def populate(url: str, conversations: int, said: list[Utterance]) -> None:
    # The matched conversation through convtree's own use cases, so that its events and path
    # digests are the ones an append writes; then the others' paths alone (random digests, numbered
    # after every event: a lookup probes them and never reads their events).
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    store = Store(pool)
    caller = Caller(TENANT, "bench-threads")
    try:
        async with store.transaction() as tx:
            new = conversations_app.NewConversation(title="matched")
            cid = (await conversations_app.create(tx, caller, new)).conversation.id
        for message in said[:DEPTH]:
            async with store.transaction() as tx:
                text = message.content if isinstance(message.content, str) else ""
                await messages_app.append(tx, caller, cid, messages_app.NewMessage(role=message.role, content=text))
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    try:
        # Written without the index, which is built once after (as fast as it gets), and kept away
        # from autovacuum, whose pass over the new rows would land in the middle of the measurement.
        index = await conn.fetchval("SELECT pg_get_indexdef('message_paths_lookup'::regclass)")
        await conn.execute("DROP INDEX message_paths_lookup")
        await conn.execute("ALTER TABLE message_paths SET (autovacuum_enabled = off)")
        # `conversations` - 1 paths of random digests.
        await conn.execute(
            """
            INSERT INTO message_paths (seq, tenant, path_digest)
            SELECT (SELECT max(seq) FROM events) + c.n * $2 + m, $1, sha256(uuid_send(gen_random_uuid()))
              FROM generate_series(1, $3::int - 1) c(n), generate_series(1, $2) m
            """,
            TENANT,
            DEPTH,
            conversations,
        )
        await conn.execute(index)  # the migration's own definition, read back above
        await conn.execute("VACUUM ANALYZE message_paths")
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()


async def measure(url: str, digests: list[bytes], lookups: int) -> tuple[float, str]:
    conn = await asyncpg.connect(url)
    try:
        tx = Tx(conn)
        for _ in range(50):  # warm-up: the statement prepared, the pages cached
            await tx.find_thread(TENANT, digests)
        times = []
        for _ in range(lookups):
            start = time.perf_counter()
            found = await tx.find_thread(TENANT, digests)
            times.append(time.perf_counter() - start)
        assert found is not None and found[0] == DEPTH, found
        query = Q["find_thread"]
        args = query.args({"tenant": TENANT, "digests": digests})
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query.sql, *args)
        return statistics.median(times) * 1000, "\n".join(r[0] for r in plan)
    finally:
        await conn.close()


async def one_size(admin_url: str, conversations: int, lookups: int) -> tuple[float, str]:
    name = f"convtree_bench_threads_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # a name made here, never input
        url = admin_url.rsplit("/", 1)[0] + "/" + name
        await asyncio.to_thread(upgrade, url)
        said = history()
        digests = prefix_digests(said)
        started = time.monotonic()
        await populate(url, conversations, said)
        print(f"[{conversations:,} conversations written in {time.monotonic() - started:.1f} s]", file=sys.stderr)
        return await measure(url, digests, lookups)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=not os.environ.get("DATABASE_URL"))
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=2_000)
    args = p.parse_args(argv)
    small, _ = await one_size(args.database_url, args.small, args.lookups)
    large, plan = await one_size(args.database_url, args.large, args.lookups)
    print("| stored conversations (40 messages each, one tenant) | lookup of a 41-message history, median |")
    print("|---:|---:|")
    print(f"| {args.small:,} | {small:.3f} ms |")
    print(f"| {args.large:,} | {large:.3f} ms |")
    print(f"\nratio {args.large:,} ÷ {args.small:,}: {large / small:.2f} (goal ≤ 1.5)\n")
    print("EXPLAIN (ANALYZE, BUFFERS) at the large size:\n\n```\n" + plan + "\n```")


if __name__ == "__main__":
    asyncio.run(main())
