"""Turns against a fake model server: the latency convtree adds before the first token, the rate it
relays a fast stream at, and 100 streaming turns at once.

    .venv/bin/python -m bench.turns [--samples 200] [--pieces 50000] [--concurrent 100]

convtree runs in a process of its own (bench.harness.ServerProcess: uvicorn, uvloop, httptools),
the fake model server (tests/fakeupstream.py) in another, the client here; PostgreSQL is
DATABASE_URL's or an embedded one. Goals: first-token overhead p50 <= 5 ms, >= 5,000 chunks/s
relayed on one stream, 100 concurrent streaming turns without an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

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
class Figures:
    direct_first_token: Summary
    convtree_first_token: Summary
    added_p50_ms: float
    relayed_chunks_per_s: float
    direct_chunks_per_s: float
    concurrent: int
    concurrent_errors: int
    concurrent_seconds: float
    concurrent_turn: Summary


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


async def first_token(base_url: str, key: str, fake_url: str, samples: int) -> tuple[Summary, Summary]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as api,
        httpx.AsyncClient(timeout=30) as raw,
    ):
        conv = (await api.post("/v1/conversations", json={"system": MESSAGES[0]["content"]})).json()
        # Every turn branches from the system prompt, so each sends the model the same two messages.
        root = conv["head_id"]
        for _ in range(10):  # warm both paths (connections, prepared statements, vocabularies)
            await direct_first_token(raw, fake_url)
            await turn_first_token(api, conv["id"], root)
        direct, convtree = [], []
        for _ in range(samples):  # interleaved, so drift on the machine hits both alike
            direct.append(await direct_first_token(raw, fake_url))
            convtree.append(await turn_first_token(api, conv["id"], root))
    return summarize(direct), summarize(convtree)


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


async def measure(samples: int, pieces: int, concurrent: int) -> Figures:
    async with Postgres(os.environ.get("DATABASE_URL")) as pg:
        assert pg.url is not None
        dbs = Databases(pg.url)
        await dbs.prepare()
        try:
            url = await dbs.fresh("turns")
            with fake_process(pieces) as fake_url, provider_env(fake_url):
                async with ServerProcess(UVICORN, url) as server:
                    key = await issue_key(url, "bench")
                    direct, convtree = await first_token(server.base_url, key, fake_url, samples)
                    relayed, direct_rate = await relay_rate(server.base_url, key, fake_url)
                    errors, wall, per_turn = await concurrent_turns(server.base_url, key, concurrent)
        finally:
            await dbs.drop_all()
    return Figures(
        direct_first_token=direct,
        convtree_first_token=convtree,
        added_p50_ms=convtree.p50 - direct.p50,
        relayed_chunks_per_s=relayed,
        direct_chunks_per_s=direct_rate,
        concurrent=concurrent,
        concurrent_errors=errors,
        concurrent_seconds=wall,
        concurrent_turn=per_turn,
    )


def report(f: Figures) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    direct, turn, many = f.direct_first_token, f.convtree_first_token, f.concurrent_turn
    return "\n".join(
        [
            f"first token, straight from the fake: p50 {direct.p50:.2f} ms, p99 {direct.p99:.2f} ms",
            f"first token, through a convtree turn: p50 {turn.p50:.2f} ms, p99 {turn.p99:.2f} ms",
            f"  convtree adds (p50): {f.added_p50_ms:.2f} ms  (goal <= 5 ms: {verdict(f.added_p50_ms <= 5)})",
            (
                f"one stream, relayed: {f.relayed_chunks_per_s:,.0f} chunks/s  "
                f"(goal >= 5,000: {verdict(f.relayed_chunks_per_s >= 5000)}); the fake alone sends "
                f"{f.direct_chunks_per_s:,.0f}/s"
            ),
            (
                f"{f.concurrent} concurrent streaming turns: {f.concurrent_errors} errors, {f.concurrent_seconds:.2f} s "
                f"in all, per turn p50 {many.p50:.1f} ms, p99 {many.p99:.1f} ms"
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="first-token samples per path")
    parser.add_argument("--pieces", type=int, default=50_000, help="chunks in the relayed stream")
    parser.add_argument("--concurrent", type=int, default=100, help="streaming turns at once")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.pieces)
        return
    import uvloop

    print(report(uvloop.run(measure(args.samples, args.pieces, args.concurrent))))


if __name__ == "__main__":
    main()
