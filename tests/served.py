"""`convtree serve` in a subprocess, as an operator runs it, with its output read line by line."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx


class Served:
    """`convtree serve` in a subprocess, its output read line by line."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.database_url = database_url
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CONVTREE_PORT": str(self.port),
            "CONVTREE_KEY_CACHE_SECONDS": "0",
            "CONVTREE_POOL_MIN_SIZE": "1",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("convtree serve did not start:\n" + "".join(self.drain()))

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def records(self, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Every record (parsed) of that request, once its request line has been written."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            record = json.loads(line)  # every line is a JSON object
            seen.append(record)
            if record.get("request_id") == request_id and record.get("event") == "request":
                return [r for r in seen if r.get("request_id") == request_id or request_id in json.dumps(r)]
        raise AssertionError(f"no request line for {request_id} in {seen}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
