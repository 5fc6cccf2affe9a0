"""A uvicorn server in a daemon thread of the test process: how convtree (tests/servers.py) and the
fake model server (tests/fakeupstream.py) are served to the tests."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class InThread:
    """A uvicorn server run in a daemon thread of the test process."""

    def __init__(self, server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)

    def start(self, what: str = "the test server", timeout: float = 20) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
