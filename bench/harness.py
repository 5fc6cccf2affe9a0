"""The benchmark's fixtures: a PostgreSQL, fresh databases, API servers in processes of their own,
API keys and latency statistics."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil

from service.app.auth import create_key
from service.store.embedded import EmbeddedPostgres
from service.store.events import Store
from service.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0  # seconds a server may take to answer /readyz before the run is abandoned

_WORDS = [
    "the", "model", "said", "that", "a", "branch", "of", "this", "conversation", "should", "keep",
    "its", "context", "while", "user", "asks", "again", "about", "tokens", "windows", "replies",
    "events", "hashes", "trees", "parents", "children", "heads", "forks", "system", "prompts",
    "tools", "and", "assistant", "answers", "in", "plain", "words", "with", "some", "numbers", "42",
]  # fmt: skip


# --- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Latencies of one measurement, in milliseconds."""

    count: int
    p50: float
    p99: float
    mean: float


def summarize(seconds: list[float]) -> Summary:
    if not seconds:
        return Summary(0, float("nan"), float("nan"), float("nan"))
    ms = sorted(s * 1000 for s in seconds)
    if len(ms) == 1:
        return Summary(1, ms[0], ms[0], ms[0])
    # "inclusive" interpolates between observed values, so a p99 of 30 samples is not invented
    # beyond the slowest one.
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return Summary(len(ms), cuts[49], cuts[98], statistics.fmean(ms))


def message_text(rng: random.Random, chars: int = 400) -> str:
    """Plain words, exactly `chars` long: what a chat message of that size looks like on disk."""
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


# --- PostgreSQL -------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


class Postgres:
    """DATABASE_URL's server, or an embedded one in a temporary directory for the run's duration."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.embedded = url is None
        self.version = ""
        self.settings: dict[str, str] = {}
        self._server: EmbeddedPostgres | None = None
        self._dir: Path | None = None

    async def __aenter__(self) -> Self:
        if self.url is None:
            self._dir = Path(tempfile.mkdtemp(prefix="convtree-bench-pg-"))
            self._server = EmbeddedPostgres(self._dir)
            self.url = await asyncio.to_thread(self._server.start)
        conn = await asyncpg.connect(self.url)
        try:
            self.version = await conn.fetchval("SELECT version()")
            for name in ("shared_buffers", "fsync", "synchronous_commit", "autovacuum", "max_connections"):
                self.settings[name] = await conn.fetchval("SELECT current_setting($1)", name)
        finally:
            await conn.close()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def label(self) -> str:
        short = " ".join(self.version.split()[:2])
        return f"{short} ({'embedded' if self.embedded else 'DATABASE_URL'})"


class Databases:
    """Fresh databases on one server, each a copy of one migrated template; all dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"convtree_bench_{os.getpid()}"
        self.template = f"{self.prefix}_template"
        self._created: list[str] = []
        self._trees: dict[Path, str] = {}

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def prepare(self) -> None:
        # Names are made here from the pid and a fixed word, never from input, so quoting them is safe.
        await self._admin(f'DROP DATABASE IF EXISTS "{self.template}"', f'CREATE DATABASE "{self.template}"')
        self._created.append(self.template)
        await asyncio.to_thread(upgrade, with_database(self.admin_url, self.template))

    async def prepare_tree(self, root: Path) -> str:
        """A template migrated by the convtree of another source tree (`bench.run --against`), so
        that tree's server finds the schema its own code expects, whatever migrations this one
        has that it has not (its /readyz refuses a revision it does not know). Once per tree and run."""
        if root in self._trees:
            return self._trees[root]
        template = f"{self.template}_{len(self._trees) + 1}"
        await self._admin(f'DROP DATABASE IF EXISTS "{template}"', f'CREATE DATABASE "{template}"')
        self._created.append(template)
        await tree_python(root, "from service.store.migrate import upgrade; upgrade(sys.argv[1])",
                          with_database(self.admin_url, template))  # fmt: skip
        self._trees[root] = template
        return template

    async def fresh(self, purpose: str, root: Path = ROOT) -> str:
        """A new migrated database that nothing has written to, read from or analyzed; migrated
        by the code of `root` (prepared with `prepare_tree`) when that is another source tree."""
        name = f"{self.prefix}_{purpose}"
        template = self.template if root == ROOT else self._trees[root]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self._created.append(name)
        return with_database(self.admin_url, name)

    async def drop_all(self) -> None:
        await self._admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in reversed(self._created)))
        self._created.clear()


async def tree_python(root: Path, code: str, *args: str) -> str:
    """Run `code` (with `sys` imported) in a Python that imports convtree from the source tree
    `root`, and return what it printed."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "python"), "-c", f"import sys\n{code}", *args,
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"{root}: {code!r} failed:\n{err.decode(errors='replace')[-2000:]}")
    return out.decode()


async def issue_key(database_url: str, tenant: str, root: Path = ROOT) -> str:
    """A key for `tenant`, issued the way `convtree keys create` issues one (by the code of the
    source tree `root`, which wrote that database's schema)."""
    if root != ROOT:
        code = "import asyncio; from bench.harness import issue_key; print(asyncio.run(issue_key(*sys.argv[1:3])))"
        return (await tree_python(root, code, database_url, tenant)).strip()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        return await create_key(Store(pool), tenant, "bench")
    finally:
        await pool.close()


# --- API servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    kind: str  # "uvicorn" or "granian"
    workers: int = 1
    # The source tree the server imports convtree from: this checkout, or another one (`bench.run
    # --against`, e.g. a `git worktree` of an earlier commit) whose migrations are the same.
    root: Path = ROOT
    # CONVTREE_* settings of this server alone (`bench.run --observe-cost`: the request log and
    # metrics off), on top of the run's environment.
    env: tuple[tuple[str, str], ...] = ()

    def command(self, port: int) -> list[str]:
        if self.kind == "uvicorn":
            return [
                str(BIN / "python"), "-m", "uvicorn", "bench.serve:create", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers),
                "--loop", "uvloop", "--http", HTTP_PROTOCOL, "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        if self.kind == "granian":
            return [
                str(BIN / "granian"), "--interface", "asgi", "--factory", "bench.serve:create",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers),
                "--loop", "uvloop", "--http", "1", "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        raise ValueError(f"unknown server kind {self.kind!r}")


# uvicorn's httptools protocol as `convtree serve` runs it (service/api/connections.py: bounded
# requests, a connection's writes coalesced), with its default limits; every tree has it.
HTTP_PROTOCOL = "service.api.connections:BoundedHttpToolsProtocol"

UVICORN = ServerSpec("uvicorn (uvloop+httptools), 1 worker", "uvicorn")
GRANIAN = ServerSpec("granian (asgi, uvloop), 1 worker", "granian")
UVICORN_2 = ServerSpec("uvicorn (uvloop+httptools), 2 workers", "uvicorn", workers=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """convtree served by `spec` in its own process (so client and server never share an interpreter)."""

    def __init__(self, spec: ServerSpec, database_url: str) -> None:
        self.spec = spec
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Closed and removed when the server stops; kept open until then for Popen to write to.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="convtree-bench-server-", suffix=".log", delete=False
        )
        self._proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Self:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            # Ahead of the editable install's finder, so `--against` trees import their own code.
            "PYTHONPATH": str(self.spec.root),
            "CONVTREE_POOL_MAX_SIZE": "20",
            **dict(self.spec.env),
        }
        self._proc = subprocess.Popen(  # noqa: ASYNC220 (starting a process does not wait for it)
            self.spec.command(self.port),
            cwd=self.spec.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._proc is not None:
            print(f"--- {self.spec.name}'s log, last lines:\n{self.log_tail()}", file=sys.stderr)
        await self._stop()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.spec.name} exited at start:\n{self.log_tail()}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.spec.name} was not ready within {READY_TIMEOUT:.0f} s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: uvicorn and granian stop their own workers on it
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
        # Anything the server started that outlived it (only processes this run started).
        for p in descendants:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = await asyncio.to_thread(psutil.wait_procs, descendants, 5)
        for p in alive:
            p.kill()
        self._log.close()
        os.unlink(self._log.name)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and every worker it started."""
        if self._proc is None:
            return 0.0
        try:
            root = psutil.Process(self._proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total
