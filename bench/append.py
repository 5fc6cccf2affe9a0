"""Figures 1 and 5: appends over HTTP, loaded by httpx and by wrk, next to raw single-row INSERTs."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec
import psutil

from bench.cpu import CpuMeter, CpuUse, backend_pids
from bench.harness import (
    Databases,
    ServerProcess,
    ServerSpec,
    Summary,
    issue_key,
    message_text,
    summarize,
)
from service.app import messages as messages_app
from service.app.caller import Caller
from service.store.events import Store
from service.store.pool import Limits, open_pool

MAX_OPS = 2_000_000  # a ceiling on any one measurement, so that it is bounded in count as well as in time
MAX_ERROR_SHARE = 0.01  # beyond this many failed operations a figure is not worth reporting
WRK_SCRIPT = Path(__file__).with_name("wrk_append.lua")
WRK_MISSING = "wrk is not installed (Debian: apt-get install wrk)"

# The look-alike: the same columns, constraints and indexes as `events` (LIKE … INCLUDING ALL
# copies those, not triggers), so the baseline pays for the same index maintenance as an append.
RAW_SETUP = (
    "DROP TABLE IF EXISTS bench_events",
    "DROP SEQUENCE IF EXISTS bench_events_seq",
    "CREATE TABLE bench_events (LIKE events INCLUDING ALL)",
    "CREATE SEQUENCE bench_events_seq AS bigint",
)
RAW_INSERT = """
INSERT INTO bench_events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                          depth, body_sha256, payload, actor, request_id, created_at, hash)
VALUES (nextval('bench_events_seq'), $1, $2, $2, 'message_appended', $3, $4, $5, $6, $7,
        '{"metadata":{}}', 'bench', $8, $9, $10)
"""
# Where `events` has the columns of a message's run (the unbranched chain it continues, which the
# database derives as it inserts), the look-alike, which has no trigger, is given them: each
# connection writes one chain, a single run named by its root.
RAW_INSERT_RUNS = """
INSERT INTO bench_events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                          depth, body_sha256, payload, actor, request_id, created_at, hash,
                          run_id, parent_run_id)
VALUES (nextval('bench_events_seq'), $1, $2, $2, 'message_appended', $3, $4, $5, $6, $7,
        '{"metadata":{}}', 'bench', $8, $9, $10, $11, $12)
"""
HAS_RUNS = """
SELECT EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'events' AND column_name = 'run_id')
"""


@dataclass(frozen=True)
class Throughput:
    label: str
    ops: int
    seconds: float
    latencies: list[float]
    cpu: CpuUse
    errors: int

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    @property
    def latency(self) -> Summary:
        return summarize(self.latencies)


def pooled(rounds: list[Throughput]) -> Throughput:
    """Several rounds of one measurement as one: operations over time, latencies pooled, CPU averaged by time."""
    seconds = sum(r.seconds for r in rounds)

    def avg(field: str) -> float:
        return sum(getattr(r.cpu, field) * r.seconds for r in rounds) / seconds

    cpu = CpuUse(avg("client"), avg("server"), avg("postgres"), avg("other"), avg("idle"))
    return Throughput(
        rounds[0].label,
        sum(r.ops for r in rounds),
        seconds,
        [x for r in rounds for x in r.latencies],
        cpu,
        sum(r.errors for r in rounds),
    )


class ErrorShareExceeded(RuntimeError):
    pass


async def drive(
    label: str,
    ops: list[Callable[[], Awaitable[bool]]],
    warmup: float,
    seconds: float,
    server: ServerProcess | None,
    database_url: str,
) -> Throughput:
    """Run each operation in a loop of its own (one per client) for `warmup` + `seconds`; count and
    time those that finish inside the measured window."""
    window: list[float] = []  # [start, end] once set
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    stop = asyncio.Event()

    async def client(op: Callable[[], Awaitable[bool]]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            ok = await op()
            t1 = time.perf_counter()
            if window and window[0] <= t0 and not stop.is_set():
                if ok:
                    counts["ok"] += 1
                    latencies.append(t1 - t0)
                else:
                    counts["errors"] += 1
                if counts["ok"] + counts["errors"] >= MAX_OPS:
                    stop.set()

    tasks = [asyncio.create_task(client(op)) for op in ops]
    try:
        await asyncio.sleep(warmup)
        backends = await backend_pids(database_url)
        with CpuMeter(server, backends) as meter:
            window.append(time.perf_counter())
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                pass
            stop.set()
            window.append(time.perf_counter())
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    total = counts["ok"] + counts["errors"]
    if total and counts["errors"] / total > MAX_ERROR_SHARE:
        raise ErrorShareExceeded(f"{label}: {counts['errors']} of {total} operations failed")
    return Throughput(label, counts["ok"], window[1] - window[0], latencies, meter.use(), counts["errors"])


# --- over HTTP --------------------------------------------------------------------------------


def append_bodies(rng: random.Random, count: int = 64, chars: int = 400) -> list[bytes]:
    """Request bodies made once, so the client spends its time on HTTP, not on making text."""
    roles = itertools.cycle(["user", "assistant"])
    return [
        msgspec.json.encode({"role": next(roles), "content": message_text(rng, chars)}) for _ in range(count)
    ]


def http_client(base_url: str, key: str) -> httpx.AsyncClient:
    """One chat client: a keep-alive HTTP/1.1 connection of its own."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def create_conversations(client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        r = await client.post("/v1/conversations", content=msgspec.json.encode({"title": f"bench {i}"}))
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


async def http_appends(
    label: str,
    server: ServerProcess,
    key: str,
    conversation_ids: list[str],
    clients: int,
    bodies: list[bytes],
    warmup: float,
    seconds: float,
    keyed: bool = False,
) -> Throughput:
    """`clients` concurrent clients, client i appending to conversation i modulo their number;
    `keyed`: each request with an Idempotency-Key of its own."""
    sessions = [http_client(server.base_url, key) for _ in range(clients)]

    def op_for(i: int) -> Callable[[], Awaitable[bool]]:
        path = f"/v1/conversations/{conversation_ids[i % len(conversation_ids)]}/messages"
        body = itertools.cycle(bodies[i:] + bodies[:i])
        session = sessions[i]

        async def op() -> bool:
            headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else None
            r = await session.post(path, content=next(body), headers=headers)
            return r.status_code == 201

        return op

    try:
        return await drive(
            label, [op_for(i) for i in range(clients)], warmup, seconds, server, server.database_url
        )
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))


# --- over HTTP, driven by wrk -----------------------------------------------------------------


class WrkResult(msgspec.Struct, frozen=True):
    """What bench/wrk_append.lua's done() prints."""

    created: int  # 201 responses
    other_status: int
    requests: int
    duration_us: int
    socket_errors: int
    quantiles_us: list[int]  # evenly spaced latency quantiles, one per ten requests


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def _children_cpu() -> float:
    """CPU time of this process's children that have exited and been waited for (wrk, here: the
    servers are still running while it is read, so they are not in it)."""
    t = psutil.Process().cpu_times()
    return t.children_user + t.children_system


async def _run_wrk(wrk: str, seconds: int, base_url: str, args: list[str], clients: int) -> WrkResult:
    # One thread per connection: a wrk script runs per thread, not per connection, so this is
    # what gives each connection a conversation of its own. The threads mostly wait in epoll.
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t", str(clients), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), base_url, "--", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("convtree-bench: ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return msgspec.json.decode(lines[-1].removeprefix("convtree-bench: "), type=WrkResult)


async def wrk_appends(
    label: str,
    server: ServerProcess,
    key: str,
    conversation_ids: list[str],
    clients: int,
    bodies: list[bytes],
    warmup: float,
    seconds: float,
    mode: str = "append",
) -> Throughput:
    """The same load as `http_appends` (`clients` keep-alive connections, connection i appending
    to conversation i, the same bodies), generated by wrk (bench/wrk_append.lua), whose C client
    costs a fraction of httpx's CPU per request. Its CPU counts as *client*. `mode`: `keyed`, an
    Idempotency-Key per request; `healthz`, GET /healthz instead of appends."""
    wrk = wrk_binary()
    if wrk is None:
        raise RuntimeError(WRK_MISSING)
    with tempfile.TemporaryDirectory(prefix="convtree-bench-wrk-") as tmp:
        conversations, texts = Path(tmp, "conversations"), Path(tmp, "bodies")
        conversations.write_text("".join(f"{conversation_ids[i % len(conversation_ids)]}\n" for i in range(clients)))
        texts.write_text("".join(b.decode() + "\n" for b in bodies))  # JSON encodes newlines, so one per line
        # Each run's Idempotency-Keys are its own (a key sent again is a retry, answered from the first).
        args = [key, str(conversations), str(texts), mode, uuid.uuid4().hex]
        if warmup > 0:
            warm = [*args[:-1], uuid.uuid4().hex]
            await _run_wrk(wrk, math.ceil(warmup), server.base_url, warm, clients)  # wrk counts whole seconds
        backends = await backend_pids(server.database_url)
        children = _children_cpu()
        t0 = time.monotonic()
        with CpuMeter(server, backends) as meter:
            result = await _run_wrk(wrk, max(1, round(seconds)), server.base_url, args, clients)
        wall = time.monotonic() - t0
    wrk_cores = (_children_cpu() - children) / wall
    measured = meter.use()
    # The meter counts only this process as the client; wrk's CPU moves from *other* to *client*.
    cpu = CpuUse(
        measured.client + wrk_cores,
        measured.server,
        measured.postgres,
        max(measured.other - wrk_cores, 0.0),
        measured.idle,
    )
    errors = result.other_status + result.socket_errors
    total = result.created + errors
    if total and errors / total > MAX_ERROR_SHARE:
        raise ErrorShareExceeded(f"{label}: {errors} of {total} requests failed")
    latencies = [us / 1e6 for us in result.quantiles_us]
    return Throughput(label, result.created, result.duration_us / 1e6, latencies, cpu, errors)


# --- in-process ---------------------------------------------------------------------------


async def inprocess_appends(
    label: str, database_url: str, tenant: str, conversation_ids: list[str], clients: int,
    bodies: list[bytes], warmup: float, seconds: float,
) -> Throughput:  # fmt: skip
    """The append use case called in this process as the API calls it for a request with no
    Idempotency-Key (service.app.messages.AppendGroup), without HTTP or the web framework: what is
    left of an append's cost is its database work."""
    # The server's own pool: asyncpg's default one sends a reset statement (one more round trip) after each append.
    pool = await open_pool(database_url, Limits(), min_size=clients, max_size=clients)
    store = Store(pool)
    group = messages_app.AppendGroup(store)
    caller = Caller(tenant=tenant, actor="bench")
    decoded = [msgspec.json.decode(b) for b in bodies]

    def op_for(i: int) -> Callable[[], Awaitable[bool]]:
        conversation_id = uuid.UUID(conversation_ids[i % len(conversation_ids)])
        body = itertools.cycle(decoded[i:] + decoded[:i])

        async def op() -> bool:
            b = next(body)
            new = messages_app.NewMessage(role=b["role"], content=b["content"])
            await group.append(caller, conversation_id, new)
            return True

        return op

    try:
        return await drive(label, [op_for(i) for i in range(clients)], warmup, seconds, None, database_url)
    finally:
        await pool.close()


# --- raw asyncpg ------------------------------------------------------------------------------


async def raw_inserts(
    label: str, database_url: str, clients: int, rng: random.Random, warmup: float, seconds: float
) -> Throughput:
    """`clients` connections, each inserting one events-shaped row per autocommitted statement."""
    conn = await asyncpg.connect(database_url)
    try:
        for statement in RAW_SETUP:
            await conn.execute(statement)
        runs = bool(await conn.fetchval(HAS_RUNS))
    finally:
        await conn.close()
    conns = await asyncio.gather(*(asyncpg.connect(database_url) for _ in range(clients)))
    contents = [message_text(rng).encode() for _ in range(64)]

    def op_for(conn: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
        conversation = uuid.uuid4()
        last: list[uuid.UUID | None] = [None]
        root: list[uuid.UUID] = []
        depth = itertools.count()
        body = itertools.cycle(contents)

        async def op() -> bool:
            message_id = uuid.uuid4()
            d = next(depth)
            row = (
                "bench",
                conversation,
                message_id,
                last[0],
                "user" if d % 2 == 0 else "assistant",
                d,
                hashlib.sha256(next(body)).digest(),
                uuid.uuid4().hex,
                datetime.now(UTC),
                os.urandom(32),
            )
            if runs:
                run = root[0] if root else message_id
                await conn.execute(RAW_INSERT_RUNS, *row, run, root[0] if root else None)
                root[:] = [run]
            else:
                await conn.execute(RAW_INSERT, *row)
            last[0] = message_id
            return True

        return op

    try:
        return await drive(label, [op_for(c) for c in conns], warmup, seconds, None, database_url)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


# --- figures 1 and 5 --------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendFigure:
    clients: int
    raw: list[Throughput]  # one per round
    inprocess: list[Throughput]  # the append use case without HTTP, each client on its own conversation
    own: dict[str, list[Throughput]]  # server name -> rounds: each client on a conversation of its own (httpx)
    one: list[Throughput]  # the first server, every client on one conversation
    keyed: dict[str, list[Throughput]] = field(default_factory=dict)  # as `own`, an Idempotency-Key per request
    wrk: dict[str, list[Throughput]] = field(default_factory=dict)  # as `own`, load from wrk
    wrk_keyed: dict[str, list[Throughput]] = field(default_factory=dict)  # as `wrk`, an Idempotency-Key per request
    # One wrk connection appending to one conversation, a request at a time, and the same on
    # GET /healthz (the HTTP floor), each server in the same rounds.
    sequential: dict[str, list[Throughput]] = field(default_factory=dict)
    floor: dict[str, list[Throughput]] = field(default_factory=dict)
    raw_one: list[Throughput] = field(default_factory=list)  # one asyncpg connection's INSERTs, a commit each
    wrk_skipped: str | None = None  # why there is no wrk line
    # Servers of figure 1 next to the first: another source tree (`bench.run --against`), this one
    # without the request log and metrics (`--observe-cost`).
    against: tuple[str, ...] = ()

    def ratio(self, server: str) -> float:
        return pooled(self.own[server]).rate / pooled(self.raw).rate

    def round_ratios(self, server: str) -> list[float]:
        return [h.rate / r.rate for h, r in zip(self.own[server], self.raw, strict=True)]

    def keyed_ratio(self, server: str) -> float:
        """Keyed appends ÷ unkeyed, the same server, the same rounds."""
        return pooled(self.keyed[server]).rate / pooled(self.own[server]).rate

    def keyed_round_ratios(self, server: str) -> list[float]:
        return [k.rate / u.rate for k, u in zip(self.keyed[server], self.own[server], strict=True)]

    def wrk_ratio(self, server: str) -> float:
        return pooled(self.wrk[server]).rate / pooled(self.raw).rate

    def wrk_round_ratios(self, server: str) -> list[float]:
        return [h.rate / r.rate for h, r in zip(self.wrk[server], self.raw, strict=True)]

    def wrk_keyed_ratio(self, server: str) -> float:
        """Keyed appends ÷ unkeyed under wrk, the same server, the same rounds."""
        return pooled(self.wrk_keyed[server]).rate / pooled(self.wrk[server]).rate

    def wrk_keyed_round_ratios(self, server: str) -> list[float]:
        return [k.rate / u.rate for k, u in zip(self.wrk_keyed[server], self.wrk[server], strict=True)]

    def over_floor_ms(self, server: str) -> float:
        """A sequential append's p50 above GET /healthz's, ms (Summary is in ms)."""
        return pooled(self.sequential[server]).latency.p50 - pooled(self.floor[server]).latency.p50

    def over_floor_rounds_ms(self, server: str) -> list[float]:
        pairs = zip(self.sequential[server], self.floor[server], strict=True)
        return [s.latency.p50 - f.latency.p50 for s, f in pairs]


@dataclass(frozen=True)
class _Target:
    spec: ServerSpec
    database_url: str
    key: str
    own: list[str]  # one conversation per client
    one: str  # the conversation every client shares


async def figure_append(
    databases: Databases,
    rng: random.Random,
    specs: list[ServerSpec],
    clients: int,
    warmup: float,
    seconds: float,
    rounds: int,
    wrk_specs: list[ServerSpec] | None = None,
    against: list[ServerSpec] | None = None,
) -> AppendFigure:
    """Every server on a fresh database of its own; each round, the baselines and then every server
    in turn, so that a slow spell of the machine falls on all of them. One server runs at a time
    (started afresh each round), so the run never holds more connections than one server's pools.
    Servers in `wrk_specs` (default: the first) also take the load from wrk, after httpx's; those in
    `against` join the servers with both loads (another source tree, on a database its own code
    migrated; or this one with other settings)."""
    bodies = append_bodies(rng)
    wrk_specs = list(specs[:1] if wrk_specs is None else wrk_specs)
    specs = list(specs)
    against = list(against or [])
    specs += against
    wrk_specs += against
    wrk_skipped = WRK_MISSING if wrk_binary() is None else None
    if wrk_skipped is not None:
        wrk_specs = []
    targets: list[_Target] = []
    for i, spec in enumerate(specs):
        url = await databases.fresh(f"append_{i}", spec.root)
        key = await issue_key(url, "bench-append", spec.root)
        async with ServerProcess(spec, url) as server, http_client(server.base_url, key) as session:
            own = await create_conversations(session, clients)
            (one,) = await create_conversations(session, 1)
        targets.append(_Target(spec, url, key, own, one))
    first = targets[0]
    raw: list[Throughput] = []
    inprocess: list[Throughput] = []
    results: dict[str, list[Throughput]] = {spec.name: [] for spec in specs}
    by_wrk: dict[str, list[Throughput]] = {spec.name: [] for spec in wrk_specs}
    wrk_keyed: dict[str, list[Throughput]] = {spec.name: [] for spec in wrk_specs}
    sequential: dict[str, list[Throughput]] = {spec.name: [] for spec in wrk_specs}
    floor: dict[str, list[Throughput]] = {spec.name: [] for spec in wrk_specs}
    raw_one: list[Throughput] = []
    keyed: dict[str, list[Throughput]] = {spec.name: [] for spec in specs[:1] + against}
    one_conversation: list[Throughput] = []
    for _ in range(rounds):
        raw.append(await raw_inserts("raw INSERT", first.database_url, clients, rng, warmup, seconds))
        if wrk_specs:  # beside the one-client lines: what one commit costs PostgreSQL alone
            raw_one.append(await raw_inserts("raw INSERT, one", first.database_url, 1, rng, warmup, seconds))
        inprocess.append(
            await inprocess_appends(
                "in-process", first.database_url, "bench-append", first.own, clients, bodies, warmup, seconds
            )
        )
        for t in targets:
            async with ServerProcess(t.spec, t.database_url) as server:
                results[t.spec.name].append(
                    await http_appends(t.spec.name, server, t.key, t.own, clients, bodies, warmup, seconds)
                )
                if t.spec.name in keyed:
                    keyed[t.spec.name].append(
                        await http_appends(
                            t.spec.name, server, t.key, t.own, clients, bodies, warmup, seconds, keyed=True
                        )
                    )
                if t is first:
                    one_conversation.append(
                        await http_appends(
                            t.spec.name, server, t.key, [t.one], clients, bodies, warmup, seconds
                        )
                    )
                if t.spec.name in by_wrk:
                    name = t.spec.name
                    by_wrk[name].append(await wrk_appends(name, server, t.key, t.own, clients, bodies, warmup, seconds))
                    wrk_keyed[name].append(
                        await wrk_appends(name, server, t.key, t.own, clients, bodies, warmup, seconds, "keyed")
                    )
                    # One client, a request at a time: an append, and the floor, taken in turn.
                    sequential[name].append(
                        await wrk_appends(name, server, t.key, [t.one], 1, bodies, warmup, seconds)
                    )
                    floor[name].append(
                        await wrk_appends(name, server, t.key, [t.one], 1, bodies, warmup, seconds, "healthz")
                    )
    return AppendFigure(
        clients,
        raw,
        inprocess,
        results,
        one_conversation,
        keyed,
        by_wrk,
        wrk_keyed,
        sequential,
        floor,
        raw_one,
        wrk_skipped,
        tuple(spec.name for spec in against),
    )
