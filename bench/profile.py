"""Where an append's time goes inside the server: py-spy samples of uvicorn under the append load."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.append import (
    Throughput,
    append_bodies,
    create_conversations,
    http_appends,
    http_client,
    wrk_appends,
    wrk_binary,
)
from bench.harness import BIN, UVICORN, Databases, ServerProcess, issue_key

# Code groups, by the path of a frame's file: a sample counts for a group when any frame is in it.
GROUPS = (
    ("service.api (handlers, deps)", "/service/api/"),
    ("service.app (use cases)", "/service/app/"),
    ("service.store (asyncpg calls)", "/service/store/"),
    ("service.domain (decide, seal)", "/service/domain/"),
    ("asyncpg", "/asyncpg/"),
    ("litestar", "/litestar/"),
    ("uvicorn", "/uvicorn/"),
    ("msgspec", "/msgspec/"),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    load: Throughput
    groups: list[tuple[str, float]]  # share of busy samples with a frame in the group
    inclusive: list[tuple[str, float]]  # functions of ours and litestar's, by share of samples under them
    leaves: list[tuple[str, float]]  # where the samples were taken: the innermost frame
    raw_path: Path


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text)
    if match is None:
        return text, ""
    # py-spy names files relative to their sys.path entry ("asyncpg/pool.py"); a leading slash
    # lets one marker ("/asyncpg/") match those and absolute paths alike.
    return match["func"], "/" + match["file"].lstrip("/")


def _short(func: str, file: str) -> str:
    return f"{func} ({file.lstrip('/')})"


def summarize_raw(
    path: Path, top: int = 25
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]]]:
    """Read py-spy's collapsed stacks ("frame;frame;… count" per line)."""
    total = 0
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        files = [file for _, file in frames]
        for name, marker in GROUPS:
            if any(marker in f for f in files):
                groups[name] += count
        for func, file in set(frames):
            if "/service/" in file or "/litestar/" in file:
                inclusive[_short(func, file)] += count
        leaves[_short(*frames[-1])] += count
    share = (lambda c: c / total) if total else (lambda c: 0.0)
    return (
        total,
        [(name, share(groups[name])) for name, _ in GROUPS],
        [(k, share(v)) for k, v in inclusive.most_common(top)],
        [(k, share(v)) for k, v in leaves.most_common(top)],
    )


async def profile_append(
    databases: Databases, rng: random.Random, clients: int, warmup: float, seconds: float, out_dir: Path
) -> Profile:
    """Run the append load on a server of its own, and sample that server with py-spy for the
    measured window only (not its start-up, not the warm-up). The load comes from wrk where it is
    installed (httpx's client would take as much of the two cores as the server), else from httpx."""
    py_spy = BIN / "py-spy" if (BIN / "py-spy").exists() else shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / "append-profile.txt"
    url = await databases.fresh("profile")
    key = await issue_key(url, "bench-profile")
    async with ServerProcess(UVICORN, url) as server:
        async with http_client(server.base_url, key) as session:
            own = await create_conversations(session, clients)
        bodies = append_bodies(rng)
        label = "uvicorn under py-spy"
        load = asyncio.create_task(
            wrk_appends(label, server, key, own, clients, bodies, warmup, seconds)
            if wrk_binary() is not None
            else http_appends(label, server, key, own, clients, bodies, warmup, seconds)
        )
        await asyncio.sleep(warmup)
        # --nonblocking: sample without pausing the server, so the profile disturbs what it measures less.
        sampler = await asyncio.create_subprocess_exec(
            str(py_spy), "record", "--pid", str(server.pid), "--duration", str(max(1, int(seconds))),
            "--format", "raw", "--output", str(raw_path), "--rate", "200", "--nonblocking",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        result = await load
        output, _ = await asyncio.wait_for(sampler.communicate(), 30)
        if sampler.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed: {output.decode(errors='replace')[-2000:]}")
    total, groups, inclusive, leaves = summarize_raw(raw_path)
    return Profile(total, result, groups, inclusive, leaves, raw_path)
