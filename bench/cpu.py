"""CPU accounting: which of the client, the API server and PostgreSQL's backends used the machine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Self

import asyncpg
import psutil

from bench.harness import ServerProcess


@dataclass(frozen=True)
class CpuUse:
    """Cores busy during a measurement, by whom. *other* is everything else on the machine (other
    databases' backends, PostgreSQL's own background processes, anything else running)."""

    client: float
    server: float
    postgres: float  # the backends serving the measured database
    other: float
    idle: float

    def text(self) -> str:
        return (
            f"client {self.client:.2f}, server {self.server:.2f}, PostgreSQL {self.postgres:.2f}, "
            f"other {self.other:.2f}, idle {self.idle:.2f}"
        )


async def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends connected to this database now."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class CpuMeter:
    """Who used the CPU between enter and exit. Backends are those given, taken before the window:
    one that connects in the middle of it is counted under *other*."""

    def __init__(self, server: ServerProcess | None = None, backends: list[int] | None = None) -> None:
        self._server = server
        self._backends = backends or []
        self._me = psutil.Process()

    def __enter__(self) -> Self:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = self._sample()

    def _sample(self) -> tuple[float, ...]:
        system = psutil.cpu_times()
        mine = self._me.cpu_times()
        server = self._server.cpu_seconds() if self._server is not None else 0.0
        idle = system.idle + getattr(system, "iowait", 0.0)
        return (
            time.monotonic(),
            sum(system) - idle,
            mine.user + mine.system,
            server,
            _cpu_seconds(self._backends),
            idle,
        )

    def use(self) -> CpuUse:
        wall, busy, client, server, postgres, idle = (
            b - a for a, b in zip(self._start, self._end, strict=True)
        )
        wall = max(wall, 1e-9)
        other = max(busy - client - server - postgres, 0.0)
        return CpuUse(client / wall, server / wall, postgres / wall, other / wall, idle / wall)
