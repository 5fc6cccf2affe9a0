"""Figures 2 and 3: rebuilding a context over HTTP at growing depth on never-analyzed tables, beside
a raw recursive read of the same path from a plain chain table (what a simple store does); and the
same path's context beside a wide tree."""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import httpx
import msgspec
import psutil

from bench.build import Builder, Built, Plan
from bench.harness import (
    ROOT,
    UVICORN,
    Databases,
    ServerProcess,
    Summary,
    issue_key,
    summarize,
    tree_python,
)
from bench.plans import (
    Freshness,
    PlanCheck,
    analyze,
    explain_message_path,
    freshness,
    message_path_call,
    never_analyze,
)
from service.app import context as context_app
from service.app.caller import Caller
from service.store.events import Store
from service.store.pool import Limits, open_pool


class _Depth(msgspec.Struct):
    depth: int
    messages: list[msgspec.Raw]


@dataclass(frozen=True)
class Target:
    """A conversation whose head context is measured, and the ids its walk starts from."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    leaf_id: uuid.UUID
    depth: int


@dataclass(frozen=True)
class ContextTiming:
    depth: int
    http: Summary  # GET /v1/conversations/{id}/context, whole response read by the client (see `_session`)
    app: Summary  # the same use case called in-process: the store's queries and the views, no HTTP
    execute: Summary  # PostgreSQL alone: count(*) over message_path, so no rows travel
    first_http_ms: float  # the first request after building, on a server that had not run it yet
    response_bytes: int
    raw: Summary | None = None  # the raw recursive read of the same path (RAW_PATH), interleaved with `http`
    gzip: Summary | None = None  # the same request with Accept-Encoding: gzip, interleaved with `http`

    @property
    def raw_ratio(self) -> float:
        """HTTP p50 ÷ the raw read's p50 (issue 14, goal 3: ≤ 1.5)."""
        return self.http.p50 / self.raw.p50 if self.raw is not None else float("nan")


# What a simple store holds and reads (issue 14, goal 3's baseline): one row per message with a
# parent pointer, the path walked from the leaf up by primary key and fetched with asyncpg.
RAW_TABLE = """
CREATE TABLE bench_chain (
    id uuid PRIMARY KEY,
    parent_id uuid REFERENCES bench_chain (id),
    role text NOT NULL,
    content text NOT NULL,
    created_at timestamptz NOT NULL
) WITH (autovacuum_enabled = off)
"""
# The same messages as convtree's, copied from its tables, so both read the same texts.
RAW_COPY = """
INSERT INTO bench_chain (id, parent_id, role, content, created_at)
SELECT e.message_id, e.parent_id, e.role, b.content, e.created_at
  FROM events e JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = $1 AND e.type = 'message_appended'
 ORDER BY e.depth
"""
# Leaf first, as the walk finds them; the client reverses the list (ordering rows that carry their
# content in SQL spills to disk at the default work_mem for a deep path, as message_path's would).
RAW_PATH = """
WITH RECURSIVE walk AS (
    SELECT id, parent_id, role, content, created_at FROM bench_chain WHERE id = $1
    UNION ALL
    SELECT c.id, c.parent_id, c.role, c.content, c.created_at
      FROM walk w JOIN bench_chain c ON c.id = w.parent_id
)
SELECT id, role, content, created_at FROM walk
"""
# Figure 2's main line asks for the body as it is: the raw read it is compared with compresses
# nothing, and a client on the same host gains nothing from compression; gzip is measured beside it.
IDENTITY = "identity"
RSS_READS = 100  # depth-10,000 reads between the two RSS samples (issue 14, goal 3: within 5 MiB)


@dataclass(frozen=True)
class Rss:
    """The server's resident set (itself and any worker), in bytes: on a fresh server before any
    context read, after the first, and after `reads` in all."""

    depth: int
    reads: int
    before: int
    after_first: int
    after: int

    @property
    def growth(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class DepthRun:
    """One depth, in a database of its own that holds only that conversation: the case where a
    never-analyzed table's guesses are worst (the conversation is the whole table)."""

    depth: int
    build_seconds: float
    before: Freshness
    after: Freshness
    fresh: ContextTiming
    analyzed: ContextTiming
    plan_fresh: PlanCheck
    plan_analyzed: PlanCheck
    rss: Rss | None = None  # measured at the deepest depth only


@dataclass(frozen=True)
class DepthFigure:
    runs: list[DepthRun]

    @property
    def rss(self) -> Rss | None:
        return next((r.rss for r in self.runs if r.rss is not None), None)

    @property
    def fresh(self) -> list[ContextTiming]:
        return [r.fresh for r in self.runs]

    @property
    def analyzed(self) -> list[ContextTiming]:
        return [r.analyzed for r in self.runs]


@dataclass(frozen=True)
class WidthFigure:
    build_seconds: float
    branches: int
    branch_length: int
    depth: int
    fresh: tuple[ContextTiming, ContextTiming]  # (one branch, with the extra branches)
    analyzed: tuple[ContextTiming, ContextTiming]
    before: Freshness


async def _target(conn: asyncpg.Connection, tenant: str, built: Built, depth: int) -> Target:
    row = await conn.fetchrow(
        "SELECT family_id, head_id FROM conversations WHERE tenant = $1 AND conversation_id = $2",
        tenant,
        built.conversation_id,
    )
    return Target(built.conversation_id, row["family_id"], row["head_id"], depth)


async def _http_once(session: httpx.AsyncClient, target: Target) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    r = await session.get(f"/v1/conversations/{target.conversation_id}/context")
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"context of {target.conversation_id}: HTTP {r.status_code}: {r.text[:300]}")
    return elapsed, r.content


def _check(body: bytes, target: Target) -> None:
    got = msgspec.json.decode(body, type=_Depth)
    if got.depth != target.depth or len(got.messages) != target.depth:
        raise RuntimeError(
            f"context depth {got.depth} ({len(got.messages)} messages), expected {target.depth}"
        )


async def _timed(call: Callable[[], Awaitable[object]], samples: int, budget: float) -> Summary:
    await call()  # statements are prepared on first use; time the steady state
    times: list[float] = []
    deadline = time.monotonic() + budget
    while len(times) < samples and time.monotonic() < deadline:
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return summarize(times)


async def measure(
    session: httpx.AsyncClient,
    conn: asyncpg.Connection,
    store: Store,
    caller: Caller,
    targets: list[Target],
    samples: int,
    budget: float,
    raw: bool = False,
    gzip: httpx.AsyncClient | None = None,
) -> list[ContextTiming]:
    """Time each target's context over HTTP, taking the targets in turn (so that drift on a noisy
    machine falls on all of them alike), and with `raw` each one's raw recursive read of the same
    path after it, and with `gzip` the same request from that client (asking for gzip); then the use
    case in-process, and PostgreSQL alone."""
    first: dict[Target, tuple[float, bytes]] = {}
    for t in targets:
        first[t] = await _http_once(session, t)
        _check(first[t][1], t)
        if raw:
            await _raw_once(conn, t)  # prepares the statement
        if gzip is not None:
            await _http_once(gzip, t)
    times: dict[Target, list[float]] = {t: [] for t in targets}
    raw_times: dict[Target, list[float]] = {t: [] for t in targets}
    gzip_times: dict[Target, list[float]] = {t: [] for t in targets}
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline and any(len(v) < samples for v in times.values()):
        for t in targets:
            if len(times[t]) < samples:
                times[t].append((await _http_once(session, t))[0])
                if raw:
                    raw_times[t].append(await _raw_once(conn, t))
                if gzip is not None:
                    gzip_times[t].append((await _http_once(gzip, t))[0])
    result = []
    for t in targets:
        count_sql, args = await message_path_call(conn, t.family_id, t.conversation_id, t.leaf_id, "count(*)")
        app = await _timed(
            lambda t=t: context_app.context(store, caller, t.conversation_id, None, None), samples, budget / 4
        )
        execute = await _timed(
            lambda sql=count_sql, args=args: conn.fetchval(sql, *args), samples, budget / 4
        )
        result.append(
            ContextTiming(
                t.depth,
                summarize(times[t]),
                app,
                execute,
                first[t][0] * 1000,
                len(first[t][1]),
                summarize(raw_times[t]) if raw else None,
                summarize(gzip_times[t]) if gzip is not None else None,
            )
        )
    return result


async def _raw_once(conn: asyncpg.Connection, target: Target) -> float:
    t0 = time.perf_counter()
    rows = await conn.fetch(RAW_PATH, target.leaf_id)
    rows.reverse()  # root first
    elapsed = time.perf_counter() - t0
    if len(rows) != target.depth:
        raise RuntimeError(f"raw path of {target.leaf_id}: {len(rows)} rows, expected {target.depth}")
    return elapsed


async def copy_chain(conn: asyncpg.Connection, target: Target) -> None:
    """The conversation's messages into a plain chain table, the raw read's baseline."""
    async with conn.transaction():
        await conn.execute(RAW_TABLE)
        await conn.execute(RAW_COPY, target.family_id)


def _rss(server: ServerProcess) -> int:
    root = psutil.Process(server.pid)
    return sum(p.memory_info().rss for p in (root, *root.children(recursive=True)))


async def measure_rss(url: str, key: str, target: Target, reads: int) -> Rss:
    """A fresh server's RSS before any context read, after one, and after `reads` of `target`."""
    async with ServerProcess(UVICORN, url) as server, _session(server, key, IDENTITY) as session:
        before = _rss(server)
        _check((await _http_once(session, target))[1], target)
        after_first = _rss(server)
        for _ in range(reads - 1):
            await _http_once(session, target)
        return Rss(target.depth, reads, before, after_first, _rss(server))


def _session(server: ServerProcess, key: str, encoding: str | None = None) -> httpx.AsyncClient:
    """One keep-alive client; with `encoding` it sends that Accept-Encoding instead of httpx's
    default (gzip, deflate, and others when their decoders are installed)."""
    headers = {"Authorization": f"Bearer {key}"}
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers=headers,
        timeout=httpx.Timeout(60.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


def _samples(depth: int, scale: float) -> int:
    base = 200 if depth <= 100 else 100 if depth <= 1_000 else 30
    return max(5, int(base * scale))


async def figure_depth(
    databases: Databases, rng: random.Random, depths: list[int], scale: float, budget: float
) -> DepthFigure:
    deepest = max(depths)
    return DepthFigure([await _depth_run(databases, rng, d, scale, budget, d == deepest) for d in depths])


async def _depth_run(
    databases: Databases, rng: random.Random, depth: int, scale: float, budget: float, rss: bool
) -> DepthRun:
    url = await databases.fresh(f"depth_{depth}")
    tenant = "bench-depth"
    key = await issue_key(url, tenant)
    conn = await asyncpg.connect(url)
    pool = await open_pool(url, Limits(), min_size=1, max_size=1)
    try:
        await never_analyze(conn)
        store = Store(pool)
        caller = Caller(tenant=tenant, actor="bench")
        builder = Builder(store, tenant, rng)
        built = await builder.create(f"depth {depth}")
        t0 = time.perf_counter()
        await builder.grow([Plan(built, None, depth)])
        build_seconds = time.perf_counter() - t0
        target = await _target(conn, tenant, built, depth)
        await copy_chain(conn, target)
        samples = _samples(depth, scale)
        async with (
            ServerProcess(UVICORN, url) as server,
            _session(server, key, IDENTITY) as session,
            _session(server, key, "gzip") as zipped,
        ):
            before = await freshness(conn)
            (fresh,) = await measure(session, conn, store, caller, [target], samples, budget, True, zipped)
            plan_fresh = await explain_message_path(
                conn, target.family_id, target.conversation_id, target.leaf_id
            )
            after = await freshness(conn)
            await analyze(conn)
            await conn.execute("ANALYZE bench_chain")
            (analyzed,) = await measure(session, conn, store, caller, [target], samples, budget, True, zipped)
            plan_analyzed = await explain_message_path(
                conn, target.family_id, target.conversation_id, target.leaf_id
            )
        memory = await measure_rss(url, key, target, RSS_READS) if rss else None
        return DepthRun(
            depth, build_seconds, before, after, fresh, analyzed, plan_fresh, plan_analyzed, memory
        )
    finally:
        await pool.close()
        await conn.close()


async def figure_width(
    databases: Databases,
    rng: random.Random,
    depth: int,
    branches: int,
    branch_length: int,
    scale: float,
    budget: float,
) -> WidthFigure:
    url = await databases.fresh("width")
    tenant = "bench-width"
    key = await issue_key(url, tenant)
    conn = await asyncpg.connect(url)
    pool = await open_pool(url, Limits(), min_size=1, max_size=1)
    try:
        await never_analyze(conn)
        store = Store(pool)
        caller = Caller(tenant=tenant, actor="bench")
        builder = Builder(store, tenant, rng)
        narrow, wide = await builder.create("one branch"), await builder.create("many branches")
        t0 = time.perf_counter()
        paths = [Plan(narrow, None, depth), Plan(wide, None, depth)]
        await builder.grow(paths)
        trunk = paths[1].made
        # Branches leave the path at evenly spaced depths, so every part of the walk passes some.
        await builder.grow([Plan(wide, trunk[i * depth // branches], branch_length) for i in range(branches)])
        await builder.move_head(wide, trunk[-1])
        build_seconds = time.perf_counter() - t0
        targets = [await _target(conn, tenant, narrow, depth), await _target(conn, tenant, wide, depth)]
        samples = _samples(depth, scale)
        async with ServerProcess(UVICORN, url) as server, _session(server, key) as session:
            before = await freshness(conn)
            fresh = await measure(session, conn, store, caller, targets, samples, budget)
            await analyze(conn)
            analyzed = await measure(session, conn, store, caller, targets, samples, budget)
        return WidthFigure(
            build_seconds,
            branches,
            branch_length,
            depth,
            (fresh[0], fresh[1]),
            (analyzed[0], analyzed[1]),
            before,
        )
    finally:
        await pool.close()
        await conn.close()


# --- figure 2 against another source tree (`bench.run --against TREE`) -----------------------

# Run by each tree's own code (bench.harness.tree_python), so that the rows are the ones that tree
# writes: the builder of its own bench/, the same seed, hence the same texts in both trees.
_BUILD = """
import asyncio, random, time
import asyncpg
from bench.build import Builder, Plan
from bench.plans import never_analyze
from service.store.events import Store

async def main(url, tenant, depth, seed):
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await never_analyze(conn)
        builder = Builder(Store(pool), tenant, random.Random(int(seed)))
        built = await builder.create(f"depth {depth}")
        t0 = time.perf_counter()
        await builder.grow([Plan(built, None, int(depth))])
        print(built.conversation_id, time.perf_counter() - t0)
    finally:
        await pool.close()
        await conn.close()

asyncio.run(main(*sys.argv[1:5]))
"""


@dataclass(frozen=True)
class TreeContext:
    """One source tree's context of one conversation over HTTP, never analyzed and analyzed."""

    tree: str  # "this tree" or the other tree's path
    build_seconds: float
    fresh: Summary
    analyzed: Summary
    first_http_ms: float
    response_bytes: int


@dataclass(frozen=True)
class AgainstRun:
    depth: int
    trees: list[TreeContext]  # this tree first

    def ratio(self, phase: str, other: int = 1) -> float:
        """This tree's p50 ÷ the other tree's, `phase` "fresh" or "analyzed"."""
        mine: Summary = getattr(self.trees[0], phase)
        theirs: Summary = getattr(self.trees[other], phase)
        return mine.p50 / theirs.p50


@dataclass(frozen=True)
class AgainstFigure:
    runs: list[AgainstRun]


def tree_label(root: Path) -> str:
    """The tree's checked-out commit, short, and its path: what a reader compares."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(root)
    return f"{commit} ({root})"


async def _build_in(root: Path, url: str, tenant: str, depth: int, seed: int) -> tuple[uuid.UUID, float]:
    out = (await tree_python(root, _BUILD, url, tenant, str(depth), str(seed))).split()
    return uuid.UUID(out[0]), float(out[1])


async def _interleaved(
    sessions: list[httpx.AsyncClient], targets: list[Target], samples: int, budget: float
) -> list[list[float]]:
    """Each tree's context in turn, one request at a time, the order reversed every other time
    (so that neither is always the one after the other); the first request of each is not timed."""
    for session, target in zip(sessions, targets, strict=True):
        await _http_once(session, target)
    times: list[list[float]] = [[] for _ in targets]
    order = list(range(len(targets)))
    deadline = time.monotonic() + budget
    while len(times[0]) < samples and time.monotonic() < deadline:
        for i in order:
            times[i].append((await _http_once(sessions[i], targets[i]))[0])
        order.reverse()
    return times


async def figure_depth_against(
    databases: Databases, roots: list[Path], depths: list[int], seed: int, scale: float, budget: float
) -> AgainstFigure:
    """Context over HTTP at each depth, served by this tree and by each tree of `roots` at once,
    each on a fresh database its own code migrated and its own builder filled with the same
    conversation (never analyzed, autovacuum off for its tables); the servers' requests are
    interleaved, then every database is analyzed and they are measured again."""
    runs = []
    trees = [ROOT, *roots]
    for depth in depths:
        tenant = "bench-depth"
        urls, keys, targets, builds = [], [], [], []
        for i, root in enumerate(trees):
            url = await databases.fresh(f"against_{depth}_{i}", root)
            key = await issue_key(url, tenant, root)
            conversation_id, seconds = await _build_in(root, url, tenant, depth, seed)
            urls.append(url)
            keys.append(key)
            builds.append(seconds)
            targets.append(Target(conversation_id, conversation_id, conversation_id, depth))
        samples = _samples(depth, scale)
        async with contextlib.AsyncExitStack() as stack:
            sessions = []
            for root, url, key in zip(trees, urls, keys, strict=True):
                server = await stack.enter_async_context(ServerProcess(replace(UVICORN, root=root), url))
                sessions.append(await stack.enter_async_context(_session(server, key, IDENTITY)))
            firsts = []
            for session, target in zip(sessions, targets, strict=True):
                elapsed, body = await _http_once(session, target)
                _check(body, target)
                firsts.append((elapsed, len(body)))
            fresh = await _interleaved(sessions, targets, samples, budget)
            for url in urls:
                conn = await asyncpg.connect(url)
                try:
                    await analyze(conn)
                finally:
                    await conn.close()
            analyzed = await _interleaved(sessions, targets, samples, budget)
        runs.append(
            AgainstRun(
                depth,
                [
                    TreeContext(
                        "this tree" if root == ROOT else tree_label(root),
                        builds[i],
                        summarize(fresh[i]),
                        summarize(analyzed[i]),
                        firsts[i][0] * 1000,
                        firsts[i][1],
                    )
                    for i, root in enumerate(trees)
                ],
            )
        )
    return AgainstFigure(runs)
