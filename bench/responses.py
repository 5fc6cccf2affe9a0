"""The Responses API against a fake model server: what a response adds over calling the model
directly (beside the Chat Completions door, measured in the same run), and how a chain's depth
weighs on creating and retrieving a response.

    .venv/bin/python -m bench.responses [--samples 200] [--depth 1000] [--chain-samples 50] [--against TREE]

convtree runs in a process of its own (bench.harness.ServerProcess: uvicorn, uvloop, httptools),
the fake model server (tests/fakeupstream.py, no delay) in another, the client here; PostgreSQL is
DATABASE_URL's or an embedded one.

1. Overhead: the same two messages (a system prompt and a question) sent, interleaved, straight to
   the fake's /v1/chat/completions, through convtree's /openai/v1/chat/completions, and through
   /openai/v1/responses (as `input` items), each answered whole (not streamed) and streamed (time to
   the first text piece). Each request through convtree is a new turn, its messages stored. Goal: a response adds p50 <= 5 ms, as a chat completion.
   With `--against TREE` (another convtree source tree with the same migrations, e.g. a `git
   worktree` of an earlier commit), TREE is served too, with a database of its own, and its two
   doors are measured in the same interleaving: a before/after in one run.
2. A chain of `--depth` responses, each continuing the one before (`previous_response_id`); then,
   interleaved: creating a response that continues the one at depth 10 and the one at depth
   `--depth` (each a new branch: the chain stays as it is), and retrieving those two. Creating sends
   the model the whole path (at depth 1,000: 2,000 messages), so the same request straight to the
   fake is timed beside it. Goal: depth 1,000 / depth 10 <= 1.5 for create and retrieve.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench.harness import UVICORN, Databases, Postgres, ServerProcess, Summary, issue_key, summarize
from bench.turns import fake_process, provider_env, sse

MODEL = "fake/fake-large"
AGAINST = " (against)"  # the label of the paths through the --against tree
SYSTEM, QUESTION = "Be brief.", "what is two plus two"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
INPUT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


@dataclass(frozen=True)
class Overhead:
    whole: dict[str, Summary]  # path -> latency of a whole (non-streamed) answer
    first: dict[str, Summary]  # path -> time to the first text piece, streamed
    # "whole"/"first" -> path through convtree -> the server's CPU per request (ms; the whole
    # request, streamed to its end for "first"), or nothing where it cannot be read.
    cpu: dict[str, dict[str, float]]


def on_cpu(pid: int) -> float | None:
    """Seconds the threads of process `pid` have run (Linux's schedstat, to the nanosecond: on a
    loaded machine a process's time waiting for a core is not counted, as it is in a profiler's
    samples); None where it cannot be read."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Chain:
    depth: int
    create: dict[int, Summary]  # depth -> creating a response continuing the one there
    retrieve: dict[int, Summary]
    direct: dict[int, Summary]  # depth -> the same model request straight to the fake
    built_seconds: float


# --- one request each ----------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def first_piece(client: httpx.AsyncClient, url: str, body: dict[str, Any], is_text: Callable[[str, str], bool]) -> float:
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {(await r.aread())[:300]!r}")
        async for event, data in sse(r):  # read to the end, as a client does
            if first is None and is_text(event, data):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url}: no text streamed")
    return first


def chat_text(event: str, data: str) -> bool:
    if data == "[DONE]":
        return False
    choices = json.loads(data).get("choices")
    return bool(choices and choices[0]["delta"].get("content"))


def response_text(event: str, data: str) -> bool:
    return event == "response.output_text.delta"


async def ok(client: httpx.AsyncClient, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await client.request(method, url, json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:300]}")
    return r.json()  # type: ignore[no-any-return]


# --- 1. overhead -----------------------------------------------------------------------------------


async def overhead(servers: list[tuple[str, str, str, int]], fake_url: str, samples: int) -> Overhead:
    """`servers`: (label, base URL, key, process id) of each convtree served; its doors' paths are
    named "chat completions" and "responses" followed by the label ("" for this tree's)."""
    async with contextlib.AsyncExitStack() as stack:
        raw = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        direct_url = f"{fake_url}/v1/chat/completions"
        chat = {"model": MODEL, "messages": MESSAGES}
        response = {"model": MODEL, "input": INPUT}
        whole: dict[str, Callable[[], Awaitable[float]]] = {
            "direct": lambda: timed(lambda: ok(raw, "POST", direct_url, {**chat, "model": "fake-large"})),
        }
        first: dict[str, Callable[[], Awaitable[float]]] = {
            "direct": lambda: first_piece(raw, direct_url, {**chat, "model": "fake-large", "stream": True}, chat_text),
        }
        pids: dict[str, int] = {}
        for label, base_url, key, pid in servers:
            pids |= {f"chat completions{label}": pid, f"responses{label}": pid}
            headers = {"Authorization": f"Bearer {key}"}
            api = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url + "/openai/v1", headers=headers, timeout=30)
            )
            whole |= {
                f"chat completions{label}": lambda api=api: timed(lambda: ok(api, "POST", "/chat/completions", chat)),
                f"responses{label}": lambda api=api: timed(lambda: ok(api, "POST", "/responses", response)),
            }
            first |= {
                f"chat completions{label}": lambda api=api: first_piece(api, "/chat/completions", {**chat, "stream": True}, chat_text),
                f"responses{label}": lambda api=api: first_piece(api, "/responses", {**response, "stream": True}, response_text),
            }
        measured: dict[str, dict[str, list[float]]] = {"whole": {k: [] for k in whole}, "first": {k: [] for k in first}}
        for _ in range(10):  # warm every path (connections, prepared statements)
            for kind in (whole, first):
                for f in kind.values():
                    await f()
        cpu: dict[str, dict[str, list[float]]] = {"whole": {k: [] for k in pids}, "first": {k: [] for k in pids}}

        async def one(kind: str, name: str, call: Callable[[], Awaitable[float]]) -> None:
            pid = pids.get(name)
            before = None if pid is None else on_cpu(pid)
            measured[kind][name].append(await call())
            after = None if pid is None else on_cpu(pid)
            if before is not None and after is not None:
                cpu[kind][name].append(after - before)

        order = list(whole)
        for _ in range(samples):  # interleaved, so drift on the machine hits every path alike
            for name in order:
                await one("whole", name, whole[name])
                await one("first", name, first[name])
            order.reverse()
    return Overhead(
        whole={k: summarize(v) for k, v in measured["whole"].items()},
        first={k: summarize(v) for k, v in measured["first"].items()},
        cpu={kind: {k: 1000 * sum(v) / len(v) for k, v in by.items() if v} for kind, by in cpu.items()},
    )


# --- 2. a chain --------------------------------------------------------------------------------------


async def chain(base_url: str, key: str, fake_url: str, depth: int, samples: int) -> Chain:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(timeout=120) as raw,
        httpx.AsyncClient(base_url=base_url + "/openai/v1", headers=headers, timeout=120) as api,
    ):
        started = time.perf_counter()
        ids: list[str] = []
        previous = None
        for i in range(depth):
            body: dict[str, Any] = {"model": MODEL, "input": f"step {i}: {QUESTION}"}
            if previous is not None:
                body["previous_response_id"] = previous
            previous = (await ok(api, "POST", "/responses", body))["id"]
            ids.append(previous)
        built = time.perf_counter() - started
        depths = sorted({min(10, depth), depth})
        at = {d: ids[d - 1] for d in depths}
        # What the model is sent when a response continues the one at depth d: the path, then the input.
        path = [item async for item in _input_items(api, at[depths[-1]])]
        last = await ok(api, "GET", f"/responses/{at[depths[-1]]}")
        path.append({"role": "assistant", "content": [{"text": last["output"][0]["content"][0]["text"]}]})
        contexts = {d: _messages(path, d) + [{"role": "user", "content": "and then?"}] for d in depths}
        create = {d: [] for d in depths}  # type: dict[int, list[float]]
        retrieve = {d: [] for d in depths}  # type: dict[int, list[float]]
        direct = {d: [] for d in depths}  # type: dict[int, list[float]]

        async def one(d: int) -> None:
            body = {"model": MODEL, "input": "and then?", "previous_response_id": at[d]}
            create[d].append(await timed(lambda: ok(api, "POST", "/responses", body)))
            retrieve[d].append(await timed(lambda: ok(api, "GET", f"/responses/{at[d]}")))
            model_body = {"model": "fake-large", "messages": contexts[d]}
            direct[d].append(await timed(lambda: ok(raw, "POST", f"{fake_url}/v1/chat/completions", model_body)))

        for _ in range(3):  # warm
            for d in depths:
                await one(d)
        for d in depths:
            create[d].clear(), retrieve[d].clear(), direct[d].clear()
        order = list(depths)
        for _ in range(samples):
            for d in order:
                await one(d)
            order.reverse()
    return Chain(
        depth=depth,
        create={d: summarize(v) for d, v in create.items()},
        retrieve={d: summarize(v) for d, v in retrieve.items()},
        direct={d: summarize(v) for d, v in direct.items()},
        built_seconds=built,
    )


async def _input_items(api: httpx.AsyncClient, response_id: str) -> Any:
    """Every input item of a response, root first (its whole path: input and output of the chain)."""
    after = None
    while True:
        params: dict[str, Any] = {"order": "asc", "limit": 100}
        if after is not None:
            params["after"] = after
        r = await api.get(f"/responses/{response_id}/input_items", params=params)
        page = r.json()
        for item in page["data"]:
            yield item
        if not page["has_more"]:
            return
        after = page["last_id"]


def _messages(path: list[dict[str, Any]], depth: int) -> list[dict[str, Any]]:
    """The chat messages of the first `depth` responses of the path (a user item and an answer each)."""
    out = []
    for item in path[: 2 * depth]:
        text = item["content"][0]["text"]
        out.append({"role": item["role"], "content": text})
    return out


# --- running -------------------------------------------------------------------------------------


async def measure(samples: int, depth: int, chain_samples: int, against: Path | None = None) -> tuple[Overhead, Chain]:
    async with Postgres(os.environ.get("DATABASE_URL")) as pg:
        assert pg.url is not None
        dbs = Databases(pg.url)
        await dbs.prepare()
        try:
            with fake_process(10) as fake_url, provider_env(fake_url):
                async with contextlib.AsyncExitStack() as stack:
                    url = await dbs.fresh("responses")
                    server = await stack.enter_async_context(ServerProcess(UVICORN, url))
                    servers = [("", server.base_url, await issue_key(url, "bench"), server.pid)]
                    if against is not None:
                        await dbs.prepare_tree(against)
                        other_url = await dbs.fresh("responses_against", against)
                        spec = replace(UVICORN, name=f"{UVICORN.name}, serving {against}", root=against)
                        other = await stack.enter_async_context(ServerProcess(spec, other_url))
                        servers.append((AGAINST, other.base_url, await issue_key(other_url, "bench"), other.pid))
                    over = await overhead(servers, fake_url, samples)
                    chained = await chain(server.base_url, await issue_key(url, "chain"), fake_url, depth, chain_samples)
        finally:
            await dbs.drop_all()
    return over, chained


def report(over: Overhead, ch: Chain) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = []
    for label, figures in (("whole answer", over.whole), ("first text piece, streamed", over.first)):
        direct = figures["direct"]
        lines.append(f"{label}: straight to the fake p50 {direct.p50:.2f} ms, p99 {direct.p99:.2f} ms")
        kind = "whole" if figures is over.whole else "first"
        for name in (n for n in figures if n != "direct"):
            s = figures[name]
            added = s.p50 - direct.p50
            used = over.cpu[kind].get(name)
            lines.append(
                f"  through {name}: p50 {s.p50:.2f} ms, p99 {s.p99:.2f} ms; adds (p50) {added:.2f} ms "
                f"(goal <= 5 ms: {verdict(added <= 5)})" + ("" if used is None else f"; server CPU {used:.2f} ms a request")
            )
        for tree in ("", AGAINST) if AGAINST in " ".join(figures) else ("",):
            difference = figures[f"responses{tree}"].p50 - figures[f"chat completions{tree}"].p50
            lines.append(f"  responses{tree} - chat completions{tree} (p50): {difference:+.2f} ms")
        if AGAINST in " ".join(figures):
            for door in ("chat completions", "responses"):
                change = figures[door].p50 - figures[door + AGAINST].p50
                lines.append(f"  {door}: this tree - {AGAINST.strip()} (p50): {change:+.2f} ms")
    lines.append(f"chain of {ch.depth} responses built in {ch.built_seconds:.1f} s")
    low, high = min(ch.create), max(ch.create)
    for label, figures in (("create", ch.create), ("retrieve", ch.retrieve), ("the model request, straight", ch.direct)):
        ratio = figures[high].p50 / figures[low].p50
        goal = "" if label.startswith("the model") else f" (goal <= 1.5: {verdict(ratio <= 1.5)})"
        lines.append(
            f"  {label}: depth {low} p50 {figures[low].p50:.2f} ms (p99 {figures[low].p99:.2f}), depth {high} p50 "
            f"{figures[high].p50:.2f} ms (p99 {figures[high].p99:.2f}); ratio {ratio:.2f}{goal}"
        )
    added = {d: ch.create[d].p50 - ch.direct[d].p50 for d in ch.create}
    lines.append(f"  create minus the model request (p50): depth {low} {added[low]:.2f} ms, depth {high} {added[high]:.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="samples per path (overhead)")
    parser.add_argument("--depth", type=int, default=1000, help="responses in the chain")
    parser.add_argument("--chain-samples", type=int, default=50, help="samples per depth (chain)")
    parser.add_argument(
        "--against", type=Path, metavar="TREE", help="also serve TREE (its doors measured in the same run: see 1.)"
    )
    args = parser.parse_args()
    if args.against is not None and not (args.against / "bench" / "serve.py").exists():
        parser.error(f"--against {args.against}: not a convtree source tree (no bench/serve.py)")
    import uvloop

    against = None if args.against is None else args.against.resolve()
    over, chained = uvloop.run(measure(args.samples, args.depth, args.chain_samples, against))
    print(report(over, chained))


if __name__ == "__main__":
    main()
