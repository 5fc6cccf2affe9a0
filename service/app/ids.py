"""Fresh ids and random keys for the use cases, cut from the kernel's random bytes drawn 4 KiB at a
time: `uuid.uuid4()` and `secrets.token_bytes()` each make a getrandom() system call, two per
append, which showed in the server's profile under load (BENCHMARKS.md, *Appends (issue 14, goals
1 and 2)*). The bytes are the same kernel CSPRNG's; each is handed out once. A child process
forked from this one starts with an empty buffer, so that parent and child never share bytes."""

from __future__ import annotations

import os
import threading
import uuid

_DRAW = 4096


class _RandomBytes:
    __slots__ = ("_buffer", "_at", "_lock")

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()  # the build and import tools call in from threads too

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._buffer):
                self._buffer = os.urandom(max(_DRAW, n))
                at = 0
            self._at = at + n
            return self._buffer[at : at + n]

    def forget(self) -> None:
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()


_random = _RandomBytes()
os.register_at_fork(after_in_child=_random.forget)


def random_bytes(n: int) -> bytes:
    """`n` random bytes, fit for a secret key (as secrets.token_bytes)."""
    return _random.take(n)


def new_id() -> uuid.UUID:
    """A random (version 4) UUID, as uuid.uuid4()."""
    return uuid.UUID(bytes=_random.take(16), version=4)
