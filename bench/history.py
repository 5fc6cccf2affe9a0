"""History benchmarks (issue 3): fork cost by depth, a fork-of-a-fork's context, rebuild and audit throughput.

    .venv/bin/python -m bench.history [--quick] [--embedded] [--max-minutes 4]

One PostgreSQL (DATABASE_URL's, else an embedded one), a fresh database per figure, each API server
in a process of its own (bench.harness.ServerProcess); prints the figures as a markdown table. Talks
only to 127.0.0.1 and unix sockets, and stops by itself (--max-minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

import asyncpg
import httpx
import msgspec
import uvloop

from bench.build import Builder, Built, Plan
from bench.harness import (
    BIN,
    ROOT,
    UVICORN,
    Databases,
    Postgres,
    ServerProcess,
    Summary,
    issue_key,
    summarize,
)
from bench.plans import analyze, never_analyze
from bench.run import machine_facts
from service.app import audit as audit_app
from service.app import context as context_app
from service.app import forks as forks_app
from service.app.caller import Caller
from service.store.events import Store
from service.store.rebuild import rebuild

# Goals (issue 3).
FORK_RATIO_GOAL = 1.5  # fork at depth 10,000 ÷ fork at depth 10
CHAIN_RATIO_GOAL = 1.3  # context of a fork-of-a-fork ÷ a plain conversation, same depth

_started = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    fork_depth: int = 10_000
    fork_samples: int = 200
    chain: tuple[int, int, int] = (
        400,
        300,
        300,
    )  # source, then each of the two forks' own messages
    context_samples: int = 100
    rebuild_conversations: int = 400  # each a trunk and two branches
    rebuild_trunk: int = 300
    rebuild_branch: int = 100
    rebuild_forks: int = 40
    rebuild_fork_length: int = 50
    rebuild_runs: int = 5
    audit_trunk: int = 19_000
    audit_branches: int = 10  # of 100 messages each
    audit_runs: int = 5


QUICK = Sizes(
    fork_depth=1_000, fork_samples=30, context_samples=20, rebuild_conversations=40, rebuild_forks=5,
    rebuild_runs=2, audit_trunk=1_900, audit_runs=3,
)  # fmt: skip


Row = tuple[str, str, str, str, str]  # figure, what, measured, goal, verdict


@dataclass
class Results:
    title: str
    facts: list[tuple[str, str]]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _ms(s: Summary) -> str:
    return f"p50 {s.p50:.1f} ms · p99 {s.p99:.1f} ms (n = {s.count})"


def _session(server: ServerProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(120.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


class _Setup:
    """A fresh database with a key, a one-connection store and a builder for one tenant."""

    def __init__(
        self,
        url: str,
        tenant: str,
        rng: random.Random,
        chars: int = 400,
        batch: int = 25,
    ) -> None:
        self.url, self.tenant, self.rng, self.chars, self.batch = (
            url,
            tenant,
            rng,
            chars,
            batch,
        )
        self.caller = Caller(tenant=tenant, actor="bench")

    async def __aenter__(self) -> Self:
        self.key = await issue_key(self.url, self.tenant)
        self.conn = await asyncpg.connect(self.url)
        pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2)
        assert pool is not None
        self.pool = pool
        self.store = Store(pool)
        self.builder = Builder(
            self.store, self.tenant, self.rng, chars=self.chars, batch=self.batch
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        await self.conn.close()

    async def fork(self, source: Built, message_id: uuid.UUID) -> Built:
        """Fork in-process through the fork use case; the new Built knows the fork point (its head)."""
        async with self.store.transaction() as tx:
            created = await forks_app.fork(
                tx, self.caller, source.conversation_id, message_id, forks_app.NewFork()
            )
        tip = msgspec.structs.replace(source.nodes[message_id], has_children=False)
        return Built(created.conversation.id, {message_id: tip})


async def _interleaved(
    calls: list[Callable[[], Awaitable[float]]], samples: int, budget: float
) -> list[Summary]:
    """Time each call `samples` times, in turn (the order flipped every round), so that drift on a
    noisy machine falls on all of them alike; one unmeasured call each first."""
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


# --- figure 1: forking at depth 10 vs 10,000 -------------------------------------------------------


async def figure_fork(dbs: Databases, rng: random.Random, sizes: Sizes) -> list[Row]:
    async with _Setup(await dbs.fresh("fork"), "bench-fork", rng) as s:
        shallow, deep = (
            await s.builder.create("depth 10"),
            await s.builder.create(f"depth {sizes.fork_depth}"),
        )
        plans = [Plan(shallow, None, 10), Plan(deep, None, sizes.fork_depth)]
        t0 = time.perf_counter()
        await s.builder.grow(plans)
        say(
            f"figure 1: built depth 10 and {sizes.fork_depth:,} in {time.perf_counter() - t0:.1f} s"
        )
        async with (
            ServerProcess(UVICORN, s.url) as server,
            _session(server, s.key) as session,
        ):

            def fork(
                built: Built, tip: uuid.UUID | None
            ) -> Callable[[], Awaitable[float]]:
                async def call() -> float:
                    t = time.perf_counter()
                    r = await session.post(
                        f"/v1/conversations/{built.conversation_id}/messages/{tip}/fork",
                        json={},
                    )
                    elapsed = time.perf_counter() - t
                    if r.status_code != 201:
                        raise RuntimeError(
                            f"fork: HTTP {r.status_code}: {r.text[:300]}"
                        )
                    return elapsed

                return call

            low, high = await _interleaved(
                [fork(shallow, plans[0].tip), fork(deep, plans[1].tip)],
                sizes.fork_samples,
                40.0,
            )
    ratio = high.p50 / low.p50
    return [
        ("1", "Fork over HTTP at the tip of a depth-10 conversation", _ms(low), "", ""),
        (
            "1",
            f"Fork over HTTP at the tip of a depth-{sizes.fork_depth:,} conversation",
            _ms(high),
            "",
            "",
        ),
        (
            "1",
            f"Fork cost, depth {sizes.fork_depth:,} ÷ depth 10 (p50s)",
            f"{ratio:.2f}",
            f"≤ {FORK_RATIO_GOAL}",
            verdict(ratio <= FORK_RATIO_GOAL),
        ),
    ]


# --- figure 2: context of a fork of a fork vs a plain conversation --------------------------------


class _Context(msgspec.Struct):
    depth: int
    messages: list[msgspec.Raw]


async def figure_chain(dbs: Databases, rng: random.Random, sizes: Sizes) -> list[Row]:
    a, b, c = sizes.chain
    depth = a + b + c
    async with _Setup(await dbs.fresh("chain"), "bench-chain", rng) as s:
        await never_analyze(s.conn)
        plain, source = (
            await s.builder.create("plain"),
            await s.builder.create("source"),
        )
        t0 = time.perf_counter()
        # The plain conversation grows alongside each link of the chain, so both are spread alike.
        p1, p2 = Plan(plain, None, a), Plan(source, None, a)
        await s.builder.grow([p1, p2])
        fork1 = await s.fork(source, p2.tip)
        p3, p4 = Plan(plain, p1.tip, b), Plan(fork1, p2.tip, b)
        await s.builder.grow([p3, p4])
        fork2 = await s.fork(fork1, p4.tip)
        p5, p6 = Plan(plain, p3.tip, c), Plan(fork2, p4.tip, c)
        await s.builder.grow([p5, p6])
        build = time.perf_counter() - t0
        say(f"figure 2: built in {build:.1f} s")
        async with (
            ServerProcess(UVICORN, s.url) as server,
            _session(server, s.key) as session,
        ):

            def over_http(built: Built) -> Callable[[], Awaitable[float]]:
                async def call() -> float:
                    t = time.perf_counter()
                    r = await session.get(
                        f"/v1/conversations/{built.conversation_id}/context"
                    )
                    elapsed = time.perf_counter() - t
                    if r.status_code != 200:
                        raise RuntimeError(
                            f"context: HTTP {r.status_code}: {r.text[:300]}"
                        )
                    got = msgspec.json.decode(r.content, type=_Context)
                    if got.depth != depth or len(got.messages) != depth:
                        raise RuntimeError(
                            f"context of depth {got.depth} ({len(got.messages)}), expected {depth}"
                        )
                    return elapsed

                return call

            def in_process(built: Built) -> Callable[[], Awaitable[float]]:
                async def call() -> float:
                    t = time.perf_counter()
                    await context_app.context(
                        s.store, s.caller, built.conversation_id, None, None
                    )
                    return time.perf_counter() - t

                return call

            rows: list[Row] = []
            for phase in ("never analyzed", "analyzed"):
                if phase == "analyzed":
                    await analyze(s.conn)
                flat, chain = await _interleaved(
                    [over_http(plain), over_http(fork2)], sizes.context_samples, 25.0
                )
                flat_app, chain_app = await _interleaved(
                    [in_process(plain), in_process(fork2)], sizes.context_samples, 10.0
                )
                ratio = chain.p50 / flat.p50
                rows += [
                    (
                        "2",
                        f"Context over HTTP, plain conversation of depth {depth:,}, {phase}",
                        _ms(flat),
                        "",
                        "",
                    ),
                    (
                        "2",
                        f"Context over HTTP, fork of a fork ({a}+{b}+{c}), {phase}",
                        _ms(chain),
                        "",
                        "",
                    ),
                    (
                        "2",
                        f"Context, fork of a fork ÷ plain (p50s), {phase}",
                        (
                            f"{ratio:.2f} (in-process, no HTTP: {chain_app.p50:.1f} ms ÷ {flat_app.p50:.1f} ms "
                            f"= {chain_app.p50 / flat_app.p50:.2f})"
                        ),
                        f"≤ {CHAIN_RATIO_GOAL}",
                        verdict(ratio <= CHAIN_RATIO_GOAL),
                    ),
                ]
    return rows


# --- figure 3: rebuild throughput ----------------------------------------------------------------

_SUMMARY = "SELECT * FROM conversations ORDER BY tenant, conversation_id"


async def figure_rebuild(
    dbs: Databases, rng: random.Random, sizes: Sizes
) -> tuple[list[Row], list[str]]:
    # Short bodies and big batches: the rebuild reads only `events`, and this makes 200k of them fast.
    async with _Setup(
        await dbs.fresh("rebuild"), "bench-rebuild", rng, chars=100, batch=100
    ) as s:
        t0 = time.perf_counter()
        convs = [
            await s.builder.create(f"c{i}") for i in range(sizes.rebuild_conversations)
        ]
        trunks = [Plan(c, None, sizes.rebuild_trunk) for c in convs]
        await s.builder.grow(trunks)
        await s.builder.grow(
            [
                Plan(t.conversation, rng.choice(t.made[:-1]), sizes.rebuild_branch)
                for t in trunks
                for _ in range(2)
            ]
        )
        forks = []
        for t in rng.sample(trunks, sizes.rebuild_forks):
            at = rng.choice(t.made)
            forks.append(
                Plan(await s.fork(t.conversation, at), at, sizes.rebuild_fork_length)
            )
        await s.builder.grow(forks)
        events = await s.conn.fetchval("SELECT count(*) FROM events")
        convs_n = await s.conn.fetchval("SELECT count(*) FROM conversations")
        say(f"figure 3: built {events:,} events in {time.perf_counter() - t0:.1f} s")
        before = await s.conn.fetch(_SUMMARY)
        rates, seconds, folded = [], [], 0
        for _ in range(sizes.rebuild_runs):
            t = time.perf_counter()
            report = await rebuild(s.conn)
            seconds.append(time.perf_counter() - t)
            folded = report.events
            rates.append(report.events / seconds[-1])
        same = [tuple(r) for r in await s.conn.fetch(_SUMMARY)] == [
            tuple(r) for r in before
        ]
        # The CLI once, in a process of its own: what an operator runs (start-up and migration check included).
        env = {**os.environ, "DATABASE_URL": s.url, "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        cli = await asyncio.to_thread(
            subprocess.run, [str(BIN / "convtree"), "rebuild"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        cli_wall = time.perf_counter() - t
    if cli.returncode != 0:
        raise RuntimeError(f"convtree rebuild failed: {cli.stderr[-500:]}")
    rows: list[Row] = [
        (
            "3",
            f"Rebuild (`service.store.rebuild.rebuild`, in-process) of {events:,} events, {convs_n:,} conversations",
            f"{statistics.median(rates):,.0f} events/s (p50 of {len(rates)} runs; "
            "s: "
            + ", ".join(f"{x:.2f}" for x in seconds)
            + f"; rows identical after: {'yes' if same else '**NO**'})",
            "",
            "" if same else "**FAIL**",
        ),
        (
            "3",
            "`convtree rebuild` (the CLI in a subprocess), same database",
            f"{cli.stdout.strip()} · wall {cli_wall:.2f} s with start-up",
            "",
            "",
        ),
    ]
    notes = [
        (
            f"Rebuild database: {sizes.rebuild_conversations} conversations of a {sizes.rebuild_trunk}-message "
            f"trunk and two {sizes.rebuild_branch}-message branches, {sizes.rebuild_forks} forks of "
            f"{sizes.rebuild_fork_length} messages; {folded:,} events folded per rebuild."
        )
    ]
    return rows, notes


# --- figure 4: audit throughput ------------------------------------------------------------------


class _Audit(msgspec.Struct):
    valid: bool
    events_checked: int


async def figure_audit(dbs: Databases, rng: random.Random, sizes: Sizes) -> list[Row]:
    async with _Setup(await dbs.fresh("audit"), "bench-audit", rng, batch=100) as s:
        conv = await s.builder.create("audited")
        trunk = Plan(conv, None, sizes.audit_trunk)
        t0 = time.perf_counter()
        await s.builder.grow([trunk])
        step = len(trunk.made) // sizes.audit_branches
        await s.builder.grow(
            [Plan(conv, trunk.made[i * step], 100) for i in range(sizes.audit_branches)]
        )
        say(f"figure 4: built in {time.perf_counter() - t0:.1f} s")
        http_times: list[float] = []
        checked = 0
        async with (
            ServerProcess(UVICORN, s.url) as server,
            _session(server, s.key) as session,
        ):
            for i in range(sizes.audit_runs + 1):
                t = time.perf_counter()
                r = await session.get(f"/v1/conversations/{conv.conversation_id}/audit")
                elapsed = time.perf_counter() - t
                got = (
                    msgspec.json.decode(r.content, type=_Audit)
                    if r.status_code == 200
                    else None
                )
                if got is None or not got.valid:
                    raise RuntimeError(f"audit: HTTP {r.status_code}: {r.text[:300]}")
                checked = got.events_checked
                if i:  # the first is a warm-up
                    http_times.append(elapsed)
        app_times: list[float] = []
        for i in range(sizes.audit_runs + 1):
            t = time.perf_counter()
            report = await audit_app.audit(s.store, s.caller, conv.conversation_id)
            if i:
                app_times.append(time.perf_counter() - t)
            assert report.valid and report.events_checked == checked
    http, app = summarize(http_times), summarize(app_times)
    return [
        (
            "4",
            f"Audit over HTTP of a conversation of {checked:,} events",
            f"{checked / (http.p50 / 1000):,.0f} events/s (p50 {http.p50 / 1000:.2f} s, n = {http.count})",
            "",
            "",
        ),
        (
            "4",
            "Audit in-process (the use case, no HTTP), same conversation",
            f"{checked / (app.p50 / 1000):,.0f} events/s (p50 {app.p50 / 1000:.2f} s, n = {app.count})",
            "",
            "",
        ),
    ]


# --- running and reporting -----------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Results:
    rng = random.Random(args.seed)
    sizes = QUICK if args.quick else Sizes()
    async with Postgres(args.database_url) as pg:
        say(f"PostgreSQL: {pg.label}")
        title = (
            f"{pg.label}{' — QUICK smoke run, not comparable' if args.quick else ''}"
        )
        results = Results(title=title, facts=machine_facts(pg))
        dbs = Databases(pg.url or "")
        await dbs.prepare()
        try:
            results.rows += await figure_fork(dbs, rng, sizes)
            say("figure 1 done")
            results.rows += await figure_chain(dbs, rng, sizes)
            say("figure 2 done")
            rows, notes = await figure_rebuild(dbs, rng, sizes)
            results.rows += rows
            results.notes += notes
            say("figure 3 done")
            results.rows += await figure_audit(dbs, rng, sizes)
            say("figure 4 done")
        finally:
            await dbs.drop_all()
    results.notes.append(
        "Load average (1/5/15 min) at the end: "
        + "/".join(f"{x:.1f}" for x in os.getloadavg())
    )
    return results


def render(r: Results) -> str:
    lines = [f"### {r.title}", "", " · ".join(f"{k}: {v}" for k, v in r.facts), ""]
    lines += ["| # | figure | measured | goal | result |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in r.rows]
    lines += [""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.history", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="an admin URL of the PostgreSQL to use (default: DATABASE_URL, else an embedded server)",
    )
    p.add_argument(
        "--embedded",
        action="store_true",
        help="use an embedded PostgreSQL even if DATABASE_URL is set",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: small sizes, figures not comparable",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=4.0,
        help="give up (and clean up) after this long",
    )
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
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
