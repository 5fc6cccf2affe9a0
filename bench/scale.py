"""Forks and data size (issue 14, goals 5 and 6): a fork and its first appends against the fork
alone, and every request on a database holding 1,000,000 other messages against a fresh one.

    .venv/bin/python -m bench.scale                       # both figures
    .venv/bin/python -m bench.scale --figures forks       # goal 5 only (about a minute)
    .venv/bin/python -m bench.scale --figures forks --against /tmp/convtree-old   # and a tree before
    .venv/bin/python -m bench.scale --figures scale --filler 1000000              # goal 6 only

*forks*: one database holding conversations of depth 100, 1,000 and 10,000 (bench/build.py), then
analyzed. At the tip of each, over HTTP from one keep-alive client: a fork alone, and a fork
followed by two appends to it; the ratio of their p50s is goal 5's (≤ 2). With `--against TREE`,
a server importing convtree from TREE is measured on the same database in the same rounds.

*scale*: two databases, one fresh and one holding `--filler` messages (conversations of 1,000 of
400 characters, built by several builders at once), each then given the same depth-1,000
conversation and analyzed, each served by a server of its own. Taken in turn, one request at a
time: an append to a conversation of its own, the depth-1,000 context, a fork at its tip, a fork
and two appends, and the agent trace of bench/agent.py (its appends by message kind and its whole
context). The ratio filled ÷ fresh of each p50 is goal 6's (≤ 1.25).

Talks only to 127.0.0.1 and unix sockets, creates `convtree_bench_<pid>_*` databases and drops
them at the end, and stops by itself (--max-minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg
import httpx
import msgspec
import uvloop

from bench.agent import KINDS, TRACE_LENGTH, agent_trace
from bench.append import create_conversations, http_client
from bench.build import Builder, Plan
from bench.harness import UVICORN, Databases, Postgres, ServerProcess, Summary, issue_key, message_text, summarize
from bench.run import machine_facts
from service.app import forks as forks_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.store.events import Store
from service.store.pool import Limits, open_pool

FORK_GOAL = 2.0  # fork + 2 appends ÷ the fork alone (p50s), at every depth
SCALE_GOAL = 1.25  # a request on the filled database ÷ on the fresh one (p50s)
FORK_DEPTHS = (100, 1_000, 10_000)
SCALE_DEPTH = 1_000
FILLER_LENGTH = 1_000  # messages per filler conversation
TENANT = "bench-scale"

_started = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {text}", file=sys.stderr, flush=True)


Row = tuple[str, ...]


@dataclass
class Results:
    title: str
    facts: list[tuple[str, str]]
    tables: list[tuple[str, list[str], list[Row]]] = field(default_factory=list)  # title, header, rows
    notes: list[str] = field(default_factory=list)


class Side:
    """One server and its client, with the conversations it forks and reads."""

    def __init__(self, name: str, server: ServerProcess, session: httpx.AsyncClient) -> None:
        self.name, self.server, self.session = name, server, session
        self.tips: dict[int, tuple[str, str]] = {}  # depth -> (conversation, its tip)
        self.own = ""  # a conversation this side appends to

    async def _post(self, path: str, body: dict[str, object], status: int = 201) -> dict[str, object]:
        r = await self.session.post(path, content=msgspec.json.encode(body))
        if r.status_code != status:
            raise RuntimeError(f"{self.name}: POST {path}: HTTP {r.status_code}: {r.text[:300]}")
        found: dict[str, object] = r.json()
        return found

    async def fork(self, depth: int) -> float:
        conversation, tip = self.tips[depth]
        t = time.perf_counter()
        await self._post(f"/v1/conversations/{conversation}/messages/{tip}/fork", {})
        return time.perf_counter() - t

    async def fork_and_append(self, depth: int, rng: random.Random) -> float:
        conversation, tip = self.tips[depth]
        texts = [message_text(rng), message_text(rng)]
        t = time.perf_counter()
        made = await self._post(f"/v1/conversations/{conversation}/messages/{tip}/fork", {})
        for role, text in zip(("user", "assistant"), texts, strict=True):
            await self._post(f"/v1/conversations/{made['id']}/messages", {"role": role, "content": text})
        return time.perf_counter() - t

    async def append(self, rng: random.Random) -> float:
        text = message_text(rng)
        t = time.perf_counter()
        await self._post(f"/v1/conversations/{self.own}/messages", {"role": "user", "content": text})
        return time.perf_counter() - t

    async def context(self, depth: int) -> float:
        conversation, _ = self.tips[depth]
        t = time.perf_counter()
        r = await self.session.get(f"/v1/conversations/{conversation}/context")
        elapsed = time.perf_counter() - t
        if r.status_code != 200 or len(r.json()["messages"]) != depth:
            raise RuntimeError(f"{self.name}: context: HTTP {r.status_code}: {r.text[:300]}")
        return elapsed


class InProcess:
    """The fork and append use cases without HTTP: whether a new fork's state is remembered for
    its appends (forks.fork_conversation's `heads`) or not, the locked first append of before."""

    def __init__(self, store: Store) -> None:
        self.caller = Caller(tenant=TENANT, actor="bench")
        self.store = store
        self.group = messages_app.AppendGroup(store)
        self.tips: dict[int, tuple[str, str]] = {}

    async def _fork(self, depth: int, remember: bool) -> uuid.UUID:
        conversation, tip = self.tips[depth]
        heads = self.group.heads if remember else None
        new = forks_app.NewFork()
        made = await forks_app.fork_conversation(
            self.store, self.caller, uuid.UUID(conversation), uuid.UUID(tip), new, None, heads
        )
        assert isinstance(made, forks_app.Created)
        return made.conversation.id

    async def fork(self, depth: int) -> float:
        t = time.perf_counter()
        await self._fork(depth, remember=True)
        return time.perf_counter() - t

    async def fork_and_append(self, depth: int, rng: random.Random, remember: bool) -> float:
        texts = [message_text(rng), message_text(rng)]
        t = time.perf_counter()
        fork = await self._fork(depth, remember)
        for role, text in zip(("user", "assistant"), texts, strict=True):
            new = messages_app.NewMessage(role=role, content=text)
            await messages_app.append_message(self.group, self.caller, fork, new)
        return time.perf_counter() - t


async def interleaved(calls: list[Callable[[], Awaitable[float]]], samples: int, budget: float) -> list[Summary]:
    """Time each call `samples` times, in turn (the order reversed every round), so that a noisy
    machine's drift falls on all of them alike; one unmeasured call each first."""
    for call in calls:
        await call()
    times: list[list[float]] = [[] for _ in calls]
    deadline = time.monotonic() + budget
    order = list(range(len(calls)))
    while time.monotonic() < deadline and min(map(len, times)) < samples:
        for i in order:
            times[i].append(await calls[i]())
        order.reverse()
    return [summarize(t) for t in times]


async def build_chains(url: str, depths: tuple[int, ...], rng: random.Random) -> dict[int, tuple[str, str]]:
    """One conversation per depth, grown together (their rows interleaved), by the builder."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        builder = Builder(Store(pool), TENANT, rng)
        plans = [Plan(await builder.create(f"depth {d}"), None, d) for d in depths]
        await builder.grow(plans)
        return {p.count: (str(p.conversation.conversation_id), str(p.tip)) for p in plans}
    finally:
        await pool.close()


async def fill(url: str, messages: int, workers: int, rng: random.Random) -> float:
    """`messages` messages in conversations of FILLER_LENGTH, of another tenant, by `workers`
    builders at once (each on its own connection), in batches of 500; returns the seconds taken."""
    t0 = time.perf_counter()
    pool = await asyncpg.create_pool(url, min_size=workers, max_size=workers)
    assert pool is not None
    try:
        count = max(1, messages // FILLER_LENGTH)
        done = 0

        async def work(worker: int) -> None:
            nonlocal done
            builder = Builder(Store(pool), "bench-filler", random.Random(rng.random()), batch=500)
            for i in range(worker, count, workers):
                await builder.grow([Plan(await builder.create(f"filler {i}"), None, FILLER_LENGTH)])
                done += 1
                if done % 100 == 0:
                    rate = done * FILLER_LENGTH / (time.perf_counter() - t0)
                    say(f"filler: {done * FILLER_LENGTH:,} messages ({rate:,.0f}/s)")

        await asyncio.gather(*(work(w) for w in range(workers)))
    finally:
        await pool.close()
    return time.perf_counter() - t0


async def analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _p50(s: Summary) -> str:
    return f"{s.p50:.2f} (n = {s.count})"


# --- forks (goal 5) -------------------------------------------------------------------------------


async def figure_forks(
    dbs: Databases, rng: random.Random, against: list[Path], samples: int, budget: float
) -> tuple[list[str], list[Row]]:
    url = await dbs.fresh("forks")
    t0 = time.perf_counter()
    tips = await build_chains(url, FORK_DEPTHS, rng)
    await analyze(url)
    say(f"forks: built depths {', '.join(f'{d:,}' for d in FORK_DEPTHS)} in {time.perf_counter() - t0:.1f} s")
    key = await issue_key(url, TENANT)
    specs = [UVICORN] + [replace(UVICORN, name=f"serving {tree}", root=tree) for tree in against]
    rows: list[Row] = []
    async with contextlib.AsyncExitStack() as stack:
        sides = []
        for spec in specs:
            server = await stack.enter_async_context(ServerProcess(spec, url))
            session = await stack.enter_async_context(http_client(server.base_url, key))
            side = Side("this tree" if spec.root == UVICORN.root else spec.name, server, session)
            side.tips = tips
            sides.append(side)
        pool = await open_pool(url, Limits(), min_size=1, max_size=2)
        stack.push_async_callback(pool.close)
        local = InProcess(Store(pool))
        local.tips = tips
        for depth in FORK_DEPTHS:
            calls: list[Callable[[], Awaitable[float]]] = []
            for side in sides:
                calls += [lambda s=side, d=depth: s.fork(d), lambda s=side, d=depth: s.fork_and_append(d, rng)]
            calls += [
                lambda d=depth: local.fork(d),
                lambda d=depth: local.fork_and_append(d, rng, remember=True),
                lambda d=depth: local.fork_and_append(d, rng, remember=False),
            ]
            found = await interleaved(calls, samples, budget)
            alone = found[-3]
            for label, with_appends in (
                ("in-process (no HTTP), the fork's state remembered", found[-2]),
                ("in-process (no HTTP), not remembered: its first append locked", found[-1]),
            ):
                ratio = with_appends.p50 / alone.p50
                rows.append((
                    f"{depth:,}", label, _p50(alone), _p50(with_appends), f"{ratio:.2f}",
                    "**pass**" if ratio <= FORK_GOAL else "**FAIL**",
                ))  # fmt: skip
            for i, side in enumerate(sides):
                alone, with_appends = found[2 * i], found[2 * i + 1]
                ratio = with_appends.p50 / alone.p50
                rows.append((
                    f"{depth:,}", side.name, _p50(alone), _p50(with_appends), f"{ratio:.2f}",
                    "**pass**" if ratio <= FORK_GOAL else "**FAIL**",
                ))  # fmt: skip
            say(f"forks: depth {depth:,} done")
    header = ["depth", "server", "fork alone, p50 ms", "fork + 2 appends, p50 ms", "ratio", f"goal ≤ {FORK_GOAL:g}"]
    return header, rows


# --- data size (goal 6) ---------------------------------------------------------------------------


async def figure_scale(
    dbs: Databases, rng: random.Random, filler: int, workers: int, samples: int, traces: int, budget: float
) -> tuple[list[str], list[Row], list[str]]:
    fresh, filled = await dbs.fresh("scale_fresh"), await dbs.fresh("scale_filled")
    took = await fill(filled, filler, workers, rng)
    say(f"scale: {filler:,} filler messages in {took:.0f} s")
    notes = [f"The filled database: {filler:,} messages in conversations of {FILLER_LENGTH:,}, built in {took:.0f} s."]
    tips = {}
    for name, url in (("fresh", fresh), ("filled", filled)):
        tips[name] = await build_chains(url, (SCALE_DEPTH,), random.Random(7))  # the same texts in both
        await analyze(url)
        conn = await asyncpg.connect(url)
        try:
            n = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'message_appended'")
            size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        finally:
            await conn.close()
        notes.append(f"{name}: {n:,} messages stored, database {size}.")
    keys = {name: await issue_key(url, TENANT) for name, url in (("fresh", fresh), ("filled", filled))}
    rows: list[Row] = []
    async with (
        ServerProcess(UVICORN, fresh) as s_fresh,
        ServerProcess(UVICORN, filled) as s_filled,
        http_client(s_fresh.base_url, keys["fresh"]) as c_fresh,
        http_client(s_filled.base_url, keys["filled"]) as c_filled,
    ):
        sides = [Side("fresh", s_fresh, c_fresh), Side("filled", s_filled, c_filled)]
        for side in sides:
            side.tips = tips[side.name]
            side.own = (await create_conversations(side.session, 1))[0]
        measured: list[tuple[str, Callable[[Side], Callable[[], Awaitable[float]]]]] = [
            ("append, 400 characters, to a conversation of its own", lambda s: lambda: s.append(rng)),
            (f"context at depth {SCALE_DEPTH:,}", lambda s: lambda: s.context(SCALE_DEPTH)),
            (f"fork at depth {SCALE_DEPTH:,}", lambda s: lambda: s.fork(SCALE_DEPTH)),
            (f"fork + 2 appends at depth {SCALE_DEPTH:,}", lambda s: lambda: s.fork_and_append(SCALE_DEPTH, rng)),
        ]
        for label, make in measured:
            a, b = await interleaved([make(sides[0]), make(sides[1])], samples, budget)
            rows.append(_scale_row(label, a, b))
            say(f"scale: {label} done")
        rows += await _agent_rows(sides, rng, traces)
    header = ["request", "fresh, p50 ms", "filled, p50 ms", "filled ÷ fresh", f"goal ≤ {SCALE_GOAL:g}"]
    return header, rows, notes


def _scale_row(label: str, fresh: Summary, filled: Summary) -> Row:
    ratio = filled.p50 / fresh.p50
    return (label, _p50(fresh), _p50(filled), f"{ratio:.2f}", "**pass**" if ratio <= SCALE_GOAL else "**FAIL**")


async def _agent_rows(sides: list[Side], rng: random.Random, traces: int) -> list[Row]:
    """The agent trace (bench/agent.py) appended to a new conversation on each side, message by
    message in turn, then each whole trace's context read in turn; the first trace unmeasured."""
    times: dict[str, list[list[float]]] = {k: [[], []] for k in KINDS}
    context: list[list[float]] = [[], []]
    made: list[list[str]] = [[], []]
    for i in range(traces + 1):
        trace = agent_trace(rng, i)
        kinds, bodies = [kind for kind, _ in trace], [msgspec.json.encode(body) for _, body in trace]
        conversations = [(await create_conversations(side.session, 1))[0] for side in sides]
        order = [0, 1] if i % 2 == 0 else [1, 0]
        for kind, body in zip(kinds, bodies, strict=True):
            for s in order:
                t = time.perf_counter()
                r = await sides[s].session.post(f"/v1/conversations/{conversations[s]}/messages", content=body)
                elapsed = time.perf_counter() - t
                if r.status_code != 201:
                    raise RuntimeError(f"{sides[s].name} trace, {kind}: HTTP {r.status_code}: {r.text[:300]}")
                if i:
                    times[kind][s].append(elapsed)
        for s in range(2):
            made[s].append(conversations[s])
    for j in range(2 * traces):
        for s in [0, 1] if j % 2 == 0 else [1, 0]:
            t = time.perf_counter()
            r = await sides[s].session.get(f"/v1/conversations/{made[s][j % len(made[s])]}/context")
            elapsed = time.perf_counter() - t
            if r.status_code != 200 or len(r.json()["messages"]) != TRACE_LENGTH:
                raise RuntimeError(f"{sides[s].name} trace context: HTTP {r.status_code}: {r.text[:300]}")
            if j:
                context[s].append(elapsed)
    rows = [_scale_row(f"agent trace: append, {kind}", *map(summarize, times[kind])) for kind in KINDS]
    rows.append(_scale_row(f"agent trace: context of the whole trace ({TRACE_LENGTH} messages)", *map(summarize, context)))
    return rows


# --- running and reporting ------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Results:
    rng = random.Random(args.seed)
    async with Postgres(args.database_url) as pg:
        say(f"PostgreSQL: {pg.label}")
        results = Results(title=pg.label, facts=machine_facts(pg))
        results.notes.append("Load average (1/5/15 min) at the start: " + "/".join(f"{x:.1f}" for x in os.getloadavg()))
        dbs = Databases(pg.url or "")
        await dbs.prepare()
        try:
            if "forks" in args.figures:
                header, rows = await figure_forks(dbs, rng, args.against, args.samples, args.budget)
                results.tables.append(("Forks: a fork and its first two appends ÷ the fork alone (goal 5)", header, rows))
            if "scale" in args.figures:
                header, rows, notes = await figure_scale(
                    dbs, rng, args.filler, args.workers, args.samples, args.traces, args.budget
                )
                title = f"At {args.filler:,} stored messages ÷ a fresh database (goal 6)"
                results.tables.append((title, header, rows))
                results.notes += notes
        finally:
            await dbs.drop_all()
    results.notes.append("Load average (1/5/15 min) at the end: " + "/".join(f"{x:.1f}" for x in os.getloadavg()))
    return results


def render(r: Results) -> str:
    lines = [f"### {r.title}", "", " · ".join(f"{k}: {v}" for k, v in r.facts), ""]
    for title, header, rows in r.tables:
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None,
                   help="an admin URL of the PostgreSQL to use (default: DATABASE_URL, else an embedded server)")
    p.add_argument("--embedded", action="store_true", help="use an embedded PostgreSQL even if DATABASE_URL is set")
    p.add_argument("--figures", default="forks,scale", help="comma-separated: forks, scale")
    p.add_argument("--against", type=Path, action="append", default=[],
                   help="(forks) also serve convtree from this source tree, on the same database, in the same rounds")
    p.add_argument("--filler", type=int, default=1_000_000, help="(scale) messages in the filled database")
    p.add_argument("--workers", type=int, default=3, help="(scale) builders filling it at once")
    p.add_argument("--samples", type=int, default=60, help="samples of each request")
    p.add_argument("--traces", type=int, default=10, help="(scale) measured agent traces on each side")
    p.add_argument("--budget", type=float, default=60.0, help="seconds at most for one comparison's samples")
    p.add_argument("--max-minutes", type=float, default=25.0, help="give up (and clean up) after this long")
    p.add_argument("--seed", type=int, default=14)
    args = p.parse_args(argv)  # fmt: skip
    args.figures = {f.strip() for f in args.figures.split(",")}
    args.against = [tree.resolve() for tree in args.against]
    if args.embedded:
        args.database_url = None

    async def bounded() -> Results:
        async with asyncio.timeout(args.max_minutes * 60):
            return await run(args)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(bounded())
    print(render(results))


if __name__ == "__main__":
    main()
