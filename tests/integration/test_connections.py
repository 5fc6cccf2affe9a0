"""What a client may send before its request exists is bounded: header bytes, and time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.postgres import Databases
from tests.servers import Server


@pytest.fixture(scope="module")
def strict(databases: Databases) -> Iterator[Server]:
    """A server whose requests must arrive within a second: headers, then body."""
    with Server(databases.migrated(), request_header_timeout_seconds=1.0, request_body_timeout_seconds=1.0) as srv:
        yield srv


def connect(srv: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def read_one(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def healthy(srv: Server) -> bool:
    with httpx.Client(base_url=srv.base_url, timeout=5) as client:
        return client.get("/healthz").status_code == 200


def test_headers_over_the_limit_are_refused_with_a_431_problem(server):
    limit = server.settings.request_max_header_bytes
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (limit + 1000) + b"\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer and b"urn:convtree:problem:header-fields-too-large" in answer
    assert healthy(server)


def test_headers_under_the_limit_are_served(server):
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        r = client.get("/healthz", headers={"X-Big": "a" * (server.settings.request_max_header_bytes - 1000)})
    assert r.status_code == 200


def test_a_flood_of_header_bytes_is_cut_off_promptly_while_others_are_served(server):
    """64 MB of headers: the server stops reading after the limit, and keeps serving everyone else."""
    outcome: dict[str, object] = {}

    def flood() -> None:
        started = time.monotonic()
        with connect(server) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                for _ in range(1024):
                    sock.sendall(b"X-Flood: " + b"a" * 65_000 + b"\r\n")
                outcome["answer"] = read_all(sock)
            except (BrokenPipeError, ConnectionResetError):
                outcome["answer"] = b"closed"
        outcome["seconds"] = time.monotonic() - started

    flooder = threading.Thread(target=flood)
    flooder.start()
    served = [healthy(server) for _ in range(5)]
    flooder.join(timeout=30)
    assert not flooder.is_alive()
    assert all(served)
    answer = outcome["answer"]
    assert answer == b"closed" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]  # type: ignore[union-attr]
    assert outcome["seconds"] < 10  # generous: it is refused after 32 KiB, not after 64 MB


def test_a_client_that_sends_half_its_headers_is_dropped_after_the_timeout(strict):
    with connect(strict) as slow:
        slow.sendall(b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        # Meanwhile everyone else is served.
        assert all(healthy(strict) for _ in range(3))
        started = time.monotonic()
        answer = read_all(slow)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"urn:convtree:problem:request-timeout" in answer
    assert waited < 10


def test_a_client_that_sends_half_its_body_is_dropped_after_the_timeout(strict):
    _, key = strict.new_key()
    with connect(strict) as slow:
        slow.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"title\": "
        )
        assert all(healthy(strict) for _ in range(3))
        answer = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    with strict.client(key) as client:
        assert client.get("/v1/conversations").json()["items"] == []  # nothing was created


def test_a_kept_alive_connection_whose_next_request_stalls_is_dropped(strict):
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_one(sock)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_a_connection_that_never_sends_a_request_is_closed(strict):
    with connect(strict) as idle:
        assert read_all(idle) == b""


def test_a_request_that_arrived_in_full_may_take_longer_than_the_timeouts(strict):
    """The bounds are on receiving a request: a long-poll answers after its wait, on a kept-alive connection."""
    _, key = strict.new_key()
    with strict.client(key) as client:
        started = time.monotonic()
        r = client.get("/v1/events", params={"wait": 2.5})
        assert r.status_code == 200 and time.monotonic() - started >= 2.5
        assert client.get("/v1/events").status_code == 200
