"""Turns against a fake model server: the latency convtree adds before the first token, the rate it
relays a fast stream at, and 100 streaming turns at once.

    .venv/bin/python -m bench.turns [--samples 200] [--pieces 50000] [--concurrent 100]
                                    [--first-token-only] [--baseline PATH ...]

convtree runs in a process of its own (bench.harness.ServerProcess: uvicorn, uvloop, httptools),
the fake model server (tests/fakeupstream.py) in another, the client here; PostgreSQL is
DATABASE_URL's or an embedded one. Goals: first-token overhead p50 <= 5 ms, >= 5,000 chunks/s
relayed on one stream, 100 concurrent streaming turns without an error.

`--baseline PATH` (repeatable) serves another source tree of convtree (another checkout, with the
same schema) in a process of its own beside this one, on a database of its own, and measures them
all in the same run: first-token samples interleaved (the servers' order reversed every round),
then the relay and concurrent figures twice each, in one order and then the other, the better kept.
On a shared machine that is the only fair before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

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

FLOOD_MODEL = "fake-flood"
MODEL = "fake-large"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is two plus two"}]


@dataclass(frozen=True)
class Served:
    """One convtree server's figures (relay and concurrency: None with --first-token-only)."""

    label: str
    first_token: Summary
    added_p50_ms: float
    relayed_chunks_per_s: float | None = None
    concurrent_errors: int | None = None
    concurrent_seconds: float | None = None
    concurrent_turn: Summary | None = None


@dataclass(frozen=True)
class Figures:
    direct_first_token: Summary
    direct_chunks_per_s: float | None
    concurrent: int
    served: list[Served]  # this tree first, then the baselines if any


# --- the fake model server, in a process of its own ---------------------------------------------


def serve_fake(pieces: int) -> None:
    """Run the fake model server until stdin closes; its base URL is the first line printed."""
    from tests.fakeupstream import FakeUpstream

    with FakeUpstream(max_stream_seconds=600, floods={FLOOD_MODEL: pieces}) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def fake_process(pieces: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "bench.turns", "--serve-fake", "--pieces", str(pieces)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def provider_env(fake_url: str) -> Iterator[None]:
    """The server process reads its providers from the environment: one, the fake."""
    providers = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)  # noqa: SIM115
    with providers:
        providers.write(
            '[providers.fake]\nkind = "openai"\n'
            f'base_url = "{fake_url}/v1"\napi_key = "sk-bench"\ndefault_model = "{MODEL}"\n'
            "timeouts = { max_connections = 200 }\n"
        )
    saved = {k: os.environ.get(k) for k in ("CONVTREE_PROVIDERS_FILE",)}
    os.environ["CONVTREE_PROVIDERS_FILE"] = providers.name
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.unlink(providers.name)


# --- clients -------------------------------------------------------------------------------------


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


async def direct_first_token(client: httpx.AsyncClient, fake_url: str) -> float:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", f"{fake_url}/v1/chat/completions", json=body) as r:
        async for _, data in sse(r):  # read to the end, as the turn's client does
            if first is None and data != "[DONE]":
                choices = json.loads(data)["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the fake sent no text")
    return first


async def turn_first_token(client: httpx.AsyncClient, cid: str, parent: str) -> float:
    body = {"content": MESSAGES[1]["content"], "parent_message_id": parent, "stream": True}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        async for event, _ in sse(r):
            if event == "delta" and first is None:
                first = time.perf_counter() - started
            if event == "error":
                raise RuntimeError("turn failed")
    assert first is not None
    return first


async def first_token(
    servers: list[tuple[str, str]], fake_url: str, samples: int
) -> tuple[Summary, list[Summary]]:
    """First-token latencies straight from the fake and through each (base URL, key) server."""
    async with contextlib.AsyncExitStack() as stack:
        raw = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        apis, targets = [], []
        for base_url, key in servers:
            api = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            apis.append(await stack.enter_async_context(api))
            conv = (await api.post("/v1/conversations", json={"system": MESSAGES[0]["content"]})).json()
            # Every turn branches from the system prompt, so each sends the model the same two messages.
            targets.append((conv["id"], conv["head_id"]))
        for _ in range(10):  # warm every path (connections, prepared statements, vocabularies)
            await direct_first_token(raw, fake_url)
            for api, (cid, root) in zip(apis, targets, strict=True):
                await turn_first_token(api, cid, root)
        direct: list[float] = []
        through: list[list[float]] = [[] for _ in servers]
        order = list(range(len(servers)))
        for _ in range(samples):  # interleaved, so drift on the machine hits every path alike
            direct.append(await direct_first_token(raw, fake_url))
            for i in order:
                through[i].append(await turn_first_token(apis[i], *targets[i]))
            order.reverse()  # neither server always runs right after the direct request
    return summarize(direct), [summarize(t) for t in through]


async def relay_rate(base_url: str, key: str, fake_url: str) -> tuple[float, float]:
    """Chunks per second over one long stream: through convtree, and straight from the fake."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as api:
        cid = (await api.post("/v1/conversations", json={})).json()["id"]
        count, started = 0, None
        body = {"content": "flood", "model": FLOOD_MODEL, "stream": True}
        async with api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
            async for event, _ in sse(r):
                if event == "delta":
                    count += 1
                    started = started or time.perf_counter()
                elif event in ("done", "error"):
                    ended = time.perf_counter()
                    if event == "error":
                        raise RuntimeError("the flood turn failed")
        relayed = (count - 1) / (ended - started)
    async with httpx.AsyncClient(timeout=120) as raw:
        body2 = {"model": FLOOD_MODEL, "messages": [{"role": "user", "content": "flood"}], "stream": True}
        count, started = 0, None
        async with raw.stream("POST", f"{fake_url}/v1/chat/completions", json=body2) as r:
            async for _, data in sse(r):
                if data == "[DONE]":
                    ended = time.perf_counter()
                    break
                count += 1
                started = started or time.perf_counter()
        direct = (count - 1) / (ended - started)
    return relayed, direct


async def concurrent_turns(base_url: str, key: str, n: int) -> tuple[int, float, Summary]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, limits=limits) as api:
        cids = [(await api.post("/v1/conversations", json={})).json()["id"] for _ in range(n)]

        async def one(cid: str) -> float | None:
            started = time.perf_counter()
            try:
                async with api.stream(
                    "POST", f"/v1/conversations/{cid}/turns", json={"content": "hi", "stream": True}
                ) as r:
                    if r.status_code != 200:
                        return None
                    events = [event async for event, _ in sse(r)]
            except httpx.HTTPError:
                return None
            return time.perf_counter() - started if events and events[-1] == "done" else None

        started = time.perf_counter()
        results = await asyncio.gather(*(one(c) for c in cids))
        wall = time.perf_counter() - started
    ok = [r for r in results if r is not None]
    return n - len(ok), wall, summarize(ok)


async def measure(
    samples: int, pieces: int, concurrent: int, *, first_token_only: bool = False, baselines: tuple[str, ...] = ()
) -> Figures:
    specs = [("this tree", UVICORN)]
    for baseline in baselines:
        specs.append((f"baseline {baseline}", dataclasses.replace(UVICORN, root=Path(baseline).resolve())))
    async with Postgres(os.environ.get("DATABASE_URL")) as pg:
        assert pg.url is not None
        dbs = Databases(pg.url)
        await dbs.prepare()
        try:
            with fake_process(pieces) as fake_url, provider_env(fake_url):
                async with contextlib.AsyncExitStack() as stack:
                    servers = []
                    for i, (_, spec) in enumerate(specs):
                        url = await dbs.fresh(f"turns{i}")
                        server = await stack.enter_async_context(ServerProcess(spec, url))
                        servers.append((server.base_url, await issue_key(url, "bench")))
                    direct, through = await first_token(servers, fake_url, samples)
                    if first_token_only:
                        served = [Served(label, t, t.p50 - direct.p50) for (label, _), t in zip(specs, through)]
                        return Figures(direct, None, concurrent, served)
                    # Side by side, each figure is taken twice per server, in one order and then the
                    # other (A B B A), and the better of the two kept (errors: those of both), so
                    # that no server always runs in another's wake.
                    order = list(range(len(servers)))
                    rounds = [order, order[::-1]] if len(servers) > 1 else [order]
                    relays: list[list[tuple[float, float]]] = [[] for _ in servers]
                    many: list[list[tuple[int, float, Summary]]] = [[] for _ in servers]
                    for order in rounds:
                        for i in order:
                            relays[i].append(await relay_rate(*servers[i], fake_url))
                            many[i].append(await concurrent_turns(*servers[i], concurrent))
                    served = []
                    for (label, _), turn, relayed, runs in zip(specs, through, relays, many, strict=True):
                        errors = sum(r[0] for r in runs)
                        _, wall, per_turn = min(runs, key=lambda r: r[1])
                        rate = max(r for r, _ in relayed)
                        served.append(Served(label, turn, turn.p50 - direct.p50, rate, errors, wall, per_turn))
                    direct_rate = max(d for runs in relays for _, d in runs)
        finally:
            await dbs.drop_all()
    return Figures(direct_first_token=direct, direct_chunks_per_s=direct_rate, concurrent=concurrent, served=served)


def report(f: Figures) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    direct = f.direct_first_token
    lines = [f"first token, straight from the fake: p50 {direct.p50:.2f} ms, p99 {direct.p99:.2f} ms"]
    for s in f.served:
        turn, many = s.first_token, s.concurrent_turn
        lines += [
            f"[{s.label}]",
            f"first token, through a convtree turn: p50 {turn.p50:.2f} ms, p99 {turn.p99:.2f} ms",
            f"  convtree adds (p50): {s.added_p50_ms:.2f} ms  (goal <= 5 ms: {verdict(s.added_p50_ms <= 5)})",
        ]
        if s.relayed_chunks_per_s is not None and f.direct_chunks_per_s is not None:
            lines.append(
                f"one stream, relayed: {s.relayed_chunks_per_s:,.0f} chunks/s  "
                f"(goal >= 5,000: {verdict(s.relayed_chunks_per_s >= 5000)}); the fake alone sends "
                f"{f.direct_chunks_per_s:,.0f}/s"
            )
        if many is not None:
            lines.append(
                f"{f.concurrent} concurrent streaming turns: {s.concurrent_errors} errors, "
                f"{s.concurrent_seconds:.2f} s in all, per turn p50 {many.p50:.1f} ms, p99 {many.p99:.1f} ms"
            )
    ours = f.served[0]
    for base in f.served[1:]:
        lines.append(
            f"this tree - {base.label}, first-token p50: {ours.first_token.p50 - base.first_token.p50:+.2f} ms, "
            f"p99: {ours.first_token.p99 - base.first_token.p99:+.2f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="first-token samples per path")
    parser.add_argument("--pieces", type=int, default=50_000, help="chunks in the relayed stream")
    parser.add_argument("--concurrent", type=int, default=100, help="streaming turns at once")
    parser.add_argument("--first-token-only", action="store_true", help="measure the first-token latency only")
    parser.add_argument(
        "--baseline", metavar="PATH", action="append", default=[], help="another source tree, measured alongside"
    )
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.pieces)
        return
    import uvloop

    figures = measure(
        args.samples,
        args.pieces,
        args.concurrent,
        first_token_only=args.first_token_only,
        baselines=tuple(args.baseline),
    )
    print(report(uvloop.run(figures)))


if __name__ == "__main__":
    main()
