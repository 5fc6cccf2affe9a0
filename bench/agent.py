"""Figure 6: a 20-message agent trace appended over HTTP, next to a text-only trace of the same length.

The agent trace is what a tool-using chat writes: a system prompt, a question, an assistant turn
asking for two tools at once, their two results, an answer, a question with a 100 KB base64 PNG
(stored out of line, service/domain/stored.py), one more call and its result, and so on to 20
messages (`agent_trace`). The text-only trace is a system prompt and 19 user and assistant
messages of 400 characters (figure 1's bodies). Each kind goes to a server and a fresh database
of its own (this tree's code both), both servers up at once: one client each, one keep-alive
connection, and only one request in flight at any time, the two traces' messages taken in turn
(message k of one, then message k of the other, the order reversed every trace), so a slow spell
of the machine falls on both. Every image is new (random pixels, so neither deduplicated nor
compressible). Then both whole traces' contexts are read in turn, and each database's growth
(every table, heap, TOAST and index, as figure 4 counts it) is divided by the messages written.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec

from bench.append import create_conversations, http_client
from bench.disk import Part, heap_in_use, sizes
from bench.harness import UVICORN, Databases, ServerProcess, Summary, issue_key, message_text

KINDS = ("text", "tool call", "tool result", "image")
TRACE_LENGTH = 20
IMAGE_SIDE = 160  # a 160×160 RGB PNG of random pixels: about 100 KB once base64-encoded
TEXT_CHARS = 400
TOOL_RESULT_CHARS = 1_200


def png_data_url(rng: random.Random, side: int = IMAGE_SIDE) -> str:
    """A valid PNG of random pixels (incompressible) as a `data:` URL."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def agent_trace(rng: random.Random, trace: int) -> list[tuple[str, dict[str, Any]]]:
    """20 messages (kind, request body): 8 text, 4 assistant turns with tool calls (2 of them with
    two calls at once), 6 tool results, 2 user messages with an image."""
    numbers = iter(range(1, 100))

    def text(role: str, chars: int = TEXT_CHARS) -> tuple[str, dict[str, Any]]:
        return "text", {"role": role, "content": message_text(rng, chars)}

    def calls(*names: str) -> tuple[str, dict[str, Any]]:
        made = [
            {
                "id": f"call_{trace}_{next(numbers)}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": json.dumps({"query": message_text(rng, 60), "max_results": 5}),
                },
            }
            for name in names
        ]
        return "tool call", {"role": "assistant", "content": None, "tool_calls": made}

    def results(asked: tuple[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("tool result", {"role": "tool", "tool_call_id": c["id"], "content": message_text(rng, TOOL_RESULT_CHARS)})
            for c in asked[1]["tool_calls"]
        ]

    def image() -> tuple[str, dict[str, Any]]:
        parts = [
            {"type": "text", "text": "What does this screenshot show?"},
            {"type": "image_url", "image_url": {"url": png_data_url(rng), "detail": "high"}},
        ]
        return "image", {"role": "user", "content": parts}

    first, second, third, fourth = calls("search", "read_file"), calls("run"), calls("search", "fetch"), calls("run")
    messages = [
        text("system"), text("user", 200),
        first, *results(first), text("assistant"),
        image(), second, *results(second), text("assistant"),
        text("user", 200), third, *results(third), text("assistant"),
        image(), fourth, *results(fourth), text("assistant"),
        text("user", 200),
    ]  # fmt: skip
    assert len(messages) == TRACE_LENGTH
    return messages


def text_trace(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    roles = ["system"] + ["user", "assistant"] * (TRACE_LENGTH // 2)
    return [("text", {"role": role, "content": message_text(rng, TEXT_CHARS)}) for role in roles[:TRACE_LENGTH]]


@dataclass(frozen=True)
class Latencies:
    count: int
    p50: float  # ms
    p95: float
    mean: float


def latencies(seconds: list[float]) -> Latencies:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return Latencies(0, float("nan"), float("nan"), float("nan"))

    def at(q: float) -> float:  # nearest rank
        return ms[min(len(ms) - 1, max(0, round(q * len(ms)) - 1))]

    return Latencies(len(ms), at(0.50), at(0.95), sum(ms) / len(ms))


@dataclass(frozen=True)
class TraceSide:
    """One kind of trace: its appends by message kind, its whole context, what it stored."""

    name: str
    appends: dict[str, Latencies]  # message kind -> append latencies
    context: Latencies  # GET …/context of a whole trace
    context_bytes: int  # one such response's size
    request_bytes: int  # the JSON bodies of one trace's 20 appends
    messages: int  # messages written to its database (warm-up traces included)
    parts: list[Part]  # growth of every relation of its database

    @property
    def stored(self) -> int:
        return sum(p.used for p in self.parts)

    def by_table(self) -> dict[str, int]:
        grown: dict[str, int] = {}
        for p in self.parts:
            grown[p.table] = grown.get(p.table, 0) + p.used
        return grown


@dataclass(frozen=True)
class AgentFigure:
    traces: int  # measured traces of each kind
    warmup: int  # unmeasured traces of each kind, before them
    image_chars: int  # the data URL of one image
    agent: TraceSide
    text: TraceSide
    seconds: float


class _Side:
    def __init__(self, name: str, url: str, key: str, server: ServerProcess, session: httpx.AsyncClient) -> None:
        self.name, self.url, self.key, self.server, self.session = name, url, key, server, session
        self.times: dict[str, list[float]] = {k: [] for k in KINDS}
        self.conversations: list[str] = []
        self.request_bytes = 0

    async def append(self, conversation: str, kind: str, body: bytes, measured: bool) -> None:
        t0 = time.perf_counter()
        r = await self.session.post(f"/v1/conversations/{conversation}/messages", content=body)
        elapsed = time.perf_counter() - t0
        if r.status_code != 201:
            raise RuntimeError(f"{self.name} trace, {kind}: HTTP {r.status_code}: {r.text[:300]}")
        if measured:
            self.times[kind].append(elapsed)

    async def context(self, conversation: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = await self.session.get(f"/v1/conversations/{conversation}/context")
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} context: HTTP {r.status_code}: {r.text[:300]}")
        got = r.json()
        if len(got["messages"]) != TRACE_LENGTH or got.get("pending_tool_calls"):
            raise RuntimeError(f"{self.name} context: {len(got['messages'])} messages, {got.get('pending_tool_calls')}")
        return elapsed, len(r.content)


async def figure_agent(
    databases: Databases, rng: random.Random, traces: int, warmup: int, context_reads: int
) -> AgentFigure:
    t_start = time.perf_counter()
    names = ("agent", "text")
    urls = [await databases.fresh(f"trace_{n}") for n in names]
    keys = [await issue_key(url, "bench-trace") for url in urls]
    before = []
    for url in urls:
        conn = await asyncpg.connect(url)
        try:
            found = await sizes(conn)
            before.append((found, await heap_in_use(conn, found)))
        finally:
            await conn.close()
    image_chars = len(png_data_url(random.Random(0)))
    async with (
        ServerProcess(UVICORN, urls[0]) as agent_server,
        ServerProcess(UVICORN, urls[1]) as text_server,
        http_client(agent_server.base_url, keys[0]) as agent_session,
        http_client(text_server.base_url, keys[1]) as text_session,
    ):
        sides = [
            _Side("agent", urls[0], keys[0], agent_server, agent_session),
            _Side("text", urls[1], keys[1], text_server, text_session),
        ]
        for i in range(warmup + traces):
            measured = i >= warmup
            bodies = [
                [(k, msgspec.json.encode(b)) for k, b in agent_trace(rng, i)],
                [(k, msgspec.json.encode(b)) for k, b in text_trace(rng)],
            ]
            conversations = [(await create_conversations(side.session, 1))[0] for side in sides]
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for m in range(TRACE_LENGTH):
                for s in order:
                    kind, body = bodies[s][m]
                    await sides[s].append(conversations[s], kind, body, measured)
            for s, side in enumerate(sides):
                side.conversations.append(conversations[s])
                side.request_bytes = sum(len(b) for _, b in bodies[s])
        # Every whole trace's context, the two kinds in turn (the first read of each untimed).
        context_times: list[list[float]] = [[], []]
        context_bytes = [0, 0]
        for s, side in enumerate(sides):
            _, context_bytes[s] = await side.context(side.conversations[-1])
        for j in range(context_reads):
            order = [0, 1] if j % 2 == 0 else [1, 0]
            for s in order:
                side = sides[s]
                elapsed, _ = await side.context(side.conversations[j % len(side.conversations)])
                context_times[s].append(elapsed)
    results = []
    for s, side in enumerate(sides):
        conn = await asyncpg.connect(side.url)
        try:
            written = int(await conn.fetchval("SELECT count(*) FROM events WHERE type = 'message_appended'"))
            after = await sizes(conn)
            after_used = await heap_in_use(conn, after)
        finally:
            await conn.close()
        expected = (warmup + traces) * TRACE_LENGTH
        if written != expected:
            raise RuntimeError(f"{side.name}: {written} messages in the log, {expected} appended")
        old, old_used = before[s]
        parts = []
        for (table, part), size in after.items():
            grown = size - old.get((table, part), 0)
            used = after_used[table] - old_used.get(table, 0) if part == "heap" else grown
            if grown or used:
                parts.append(Part(table, part, grown, used))
        results.append(
            TraceSide(
                side.name,
                {k: latencies(v) for k, v in side.times.items() if v},
                latencies(context_times[s]),
                context_bytes[s],
                side.request_bytes,
                written,
                sorted(parts, key=lambda p: -p.used),
            )
        )
    return AgentFigure(traces, warmup, image_chars, results[0], results[1], time.perf_counter() - t_start)
