"""Replay runs against a zero-latency fake model server: convtree's own time per replayed turn, and
the throughput of a batch.

    .venv/bin/python -m bench.replays [--runs 20] [--conversations 100] [--turns 10]

convtree runs in a process of its own (bench.harness.ServerProcess: uvicorn, uvloop, httptools),
the fake model server (tests/fakeupstream.py, answering at once) in another, the client here;
PostgreSQL is DATABASE_URL's or an embedded one.

Overhead per turn: each replayed reply records the database's time of the transaction that wrote
it and, in its generation, how long the model call took (`latency_ms`). Between two turns of a run
convtree reads the context, calls the model and writes the turn, so the time between consecutive
turns' writes less the later turn's model call is what convtree itself spent on that turn. Measured
on `--runs` runs of `--turns` turns replayed one run at a time (goal: p50 <= 5 ms), and again
inside the batch. Throughput: one batch of `--conversations` conversations of `--turns` turns, from
the POST until every run has finished, with the default bounds (2 runs per tenant, 4 per process)
and with 8 and 8.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import datetime

import asyncpg
import httpx

from bench.harness import UVICORN, Databases, Postgres, ServerProcess, Summary, issue_key, summarize
from bench.turns import fake_process, provider_env

TARGET = {"provider": "fake", "model": "fake-small"}


async def conversation(client: httpx.AsyncClient, turns: int) -> str:
    cid = (await client.post("/v1/conversations", json={"system": "Be brief."})).json()["id"]
    for i in range(turns):
        await client.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"question {i}"})
        await client.post(f"/v1/conversations/{cid}/messages", json={"role": "assistant", "content": f"answer {i}"})
    return cid


async def overheads(database_url: str, run_ids: list[str]) -> list[float]:
    """Seconds convtree spent on each turn after a run's first: the time between consecutive
    turns' writes, less the later turn's model call."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT r.run_id::text AS run_id, e.created_at, (e.payload->'generation'->>'latency_ms')::float AS latency"
            "  FROM replay_runs r JOIN events e ON e.conversation_id = r.target_conversation_id"
            " WHERE r.run_id::text = ANY($1::text[]) AND e.type = 'message_appended' AND e.role = 'assistant'"
            "   AND e.payload->'generation'->>'replay_of' IS NOT NULL"
            " ORDER BY r.run_id, e.seq",
            run_ids,
        )
    finally:
        await conn.close()
    seconds: list[float] = []
    previous: tuple[str, datetime] | None = None
    for r in rows:
        if previous is not None and previous[0] == r["run_id"]:
            seconds.append((r["created_at"] - previous[1]).total_seconds() - r["latency"] / 1000)
        previous = (r["run_id"], r["created_at"])
    return seconds


async def finished(client: httpx.AsyncClient, url: str) -> None:
    while (await client.get(url)).json()["status"] not in ("finished", "failed", "stopped", "cancelled"):
        await asyncio.sleep(0.1)


async def measure(runs: int, conversations: int, turns: int) -> str:
    lines = []
    async with Postgres(os.environ.get("DATABASE_URL")) as pg:
        databases = Databases(pg.url)
        await databases.prepare()
        try:
            with fake_process(0) as fake_url, provider_env(fake_url):
                for per_tenant, workers in ((2, 4), (8, 8)):
                    os.environ["CONVTREE_REPLAY_RUNS_PER_TENANT"] = str(per_tenant)
                    os.environ["CONVTREE_REPLAY_WORKERS"] = str(workers)
                    os.environ["CONVTREE_REPLAY_POLL_SECONDS"] = "0.05"
                    url = await databases.fresh(f"replays_{per_tenant}")
                    async with ServerProcess(UVICORN, url) as server:
                        key = await issue_key(url, "bench")
                        headers = {"Authorization": f"Bearer {key}"}
                        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as client:
                            if per_tenant == 2:
                                single = []
                                for _ in range(runs):
                                    cid = await conversation(client, turns)
                                    r = await client.post(f"/v1/conversations/{cid}/replays", json={"target": TARGET})
                                    await finished(client, f"/v1/conversations/{cid}/replays/{r.json()['id']}")
                                    single.append(r.json()["id"])
                                alone = summarize(await overheads(url, single))
                                lines.append(f"overhead per replayed turn, one run at a time: {fmt(alone)}")
                                print(lines[-1], flush=True)
                            ids = list(await asyncio.gather(*(conversation(client, turns) for _ in range(conversations))))
                            started = time.perf_counter()
                            batch = (await client.post("/v1/replays", json={"conversation_ids": ids, "target": TARGET})).json()
                            await finished(client, f"/v1/replays/{batch['id']}")
                            elapsed = time.perf_counter() - started
                            done = (await client.get(f"/v1/replays/{batch['id']}")).json()
                            loaded = summarize(await overheads(url, [i["run"]["id"] for i in done["items"]]))
                            lines.append(
                                f"batch of {conversations} x {turns} turns, {per_tenant} runs per tenant, {workers} per "
                                f"process: {done['turns_done']} turns in {elapsed:.2f} s = "
                                f"{done['turns_done'] / elapsed:.0f} turns/s; overhead per turn meanwhile {fmt(loaded)}"
                            )
                            print(lines[-1], flush=True)
        finally:
            await databases.drop_all()
        lines.insert(0, f"{pg.label}, nproc {os.cpu_count()}")
    return "\n".join(lines)


def fmt(s: Summary) -> str:
    return f"p50 {s.p50:.2f} ms, p99 {s.p99:.2f} ms ({s.count} turns)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs replayed one at a time, for the overhead")
    parser.add_argument("--conversations", type=int, default=100, help="conversations in the batch")
    parser.add_argument("--turns", type=int, default=10, help="turns per conversation")
    args = parser.parse_args()
    print(asyncio.run(measure(args.runs, args.conversations, args.turns)))


if __name__ == "__main__":
    main()
