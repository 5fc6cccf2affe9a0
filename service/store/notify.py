"""Commit notifications: one LISTEN connection per process, waking the feed readers of a tenant,
the followers of a reply in flight, and the owner of a reply someone asked to cancel.

Writers NOTIFY in their transaction (begin_write, begin_create in schema.sql; a reply's checkpoint,
its end and a cancel in queries.sql), so a notification arrives only for a commit. A waiter
subscribes *before* it reads, so a commit that lands between its read and its wait still wakes it.
If the connection drops, every waiter is woken (to read again) and, until the listener is back,
waits are cut short so that nothing is missed for long; a cancel heard by no one is still read
with the owner's next checkpoint or lease renewal (the flag is in pending_replies).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

import asyncpg

from service.store.queries import Q
from service.store.session import Connection

log = logging.getLogger("convtree.notify")

CHANNEL = "convtree_events"  # payload: tenant_key(tenant)
REPLY_CHANNEL = "convtree_replies"  # payload: a reply's id; a checkpoint was written, or it ended
CANCEL_CHANNEL = "convtree_reply_cancels"  # payload: a reply's id; someone asked its owner to stop it
HEALTH_CHECK_SECONDS = 30.0  # how often the idle listener proves its connection is alive
DEGRADED_WAIT_SECONDS = 1.0  # the longest a waiter sleeps while the listener is reconnecting
RECONNECT_MAX_SECONDS = 2.0  # once the database is back, the listener is too within this long


def tenant_key(tenant: str) -> str:
    """The NOTIFY payload for a tenant: what begin_write sends (a digest, so any name fits)."""
    return hashlib.sha256(tenant.encode()).hexdigest()


class Signal:
    """Set when the subscribed tenant commits something (or the listener needs everyone to re-read)."""

    def __init__(self, listener: Listener) -> None:
        self._event = asyncio.Event()
        self._listener = listener

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True if woken by a notification."""
        if not self._listener.healthy:
            timeout = min(timeout, DEGRADED_WAIT_SECONDS)
        if timeout <= 0:
            return self._event.is_set()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Listener:
    """The process's one listening connection, and the waiters it wakes."""

    def __init__(self, database_url: str, connect_timeout: float = 5.0) -> None:
        self._url = database_url
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[tuple[str, str], set[Signal]] = {}  # by (channel, payload)
        self._on_cancel: Callable[[uuid.UUID], object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closing = False

    @property
    def healthy(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def subscribers(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="convtree-listener")

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()
        self.wake_all()

    def subscribe(self, tenant: str) -> AbstractContextManager[Signal]:
        """A signal set when the tenant commits to its log."""
        return self._subscribe((CHANNEL, tenant_key(tenant)))

    def subscribe_reply(self, reply_id: uuid.UUID) -> AbstractContextManager[Signal]:
        """A signal set when reply `reply_id` is checkpointed or ends (recorded, or closed out)."""
        return self._subscribe((REPLY_CHANNEL, str(reply_id)))

    def on_cancel(self, stop: Callable[[uuid.UUID], object]) -> None:
        """Call `stop(reply_id)` for every cancel asked of a reply, by any process (the process
        that generates it stops it; the others find nothing to stop)."""
        self._on_cancel = stop

    @contextmanager
    def _subscribe(self, key: tuple[str, str]) -> Iterator[Signal]:
        signal = Signal(self)
        self._waiters.setdefault(key, set()).add(signal)
        try:
            yield signal
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(signal)
                if not waiters:
                    del self._waiters[key]

    def _on_notify(self, _conn: Connection, _pid: int, channel: str, payload: object) -> None:
        for signal in self._waiters.get((channel, str(payload)), ()):
            signal.set()

    def _on_cancel_notify(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        stop = self._on_cancel
        if stop is None:
            return
        try:
            reply_id = uuid.UUID(str(payload))
        except ValueError:
            return  # not ours: anyone may NOTIFY on a channel
        stop(reply_id)

    def _on_terminated(self, _conn: object) -> None:
        self._lost.set()

    def wake_all(self) -> None:
        """Every waiter reads again (or sees that the service is shutting down)."""
        for waiters in self._waiters.values():
            for signal in waiters:
                signal.set()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self._url, timeout=self._connect_timeout, server_settings={"application_name": "convtree-listener"}
        )
        conn.add_termination_listener(self._on_terminated)
        await conn.add_listener(CHANNEL, self._on_notify)
        await conn.add_listener(REPLY_CHANNEL, self._on_notify)
        await conn.add_listener(CANCEL_CHANNEL, self._on_cancel_notify)
        self._conn = conn
        self._lost.clear()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with suppress(Exception):
                await conn.close(timeout=5)

    async def _supervise(self) -> None:
        """Reconnect when the connection is lost; probe it when idle, since a dead peer is silent."""
        delay = 0.1
        while not self._closing:
            if self.healthy:
                try:
                    await asyncio.wait_for(self._lost.wait(), HEALTH_CHECK_SECONDS)
                except TimeoutError:
                    try:
                        assert self._conn is not None
                        await self._conn.execute(Q["ping"].sql, timeout=5)
                        continue
                    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        log.warning("feed listener connection is not answering; reconnecting")
                await self._disconnect()
                # Commits may have gone unheard: every waiter reads again.
                self.wake_all()
            try:
                await self._connect()
                delay = 0.1
                self.wake_all()
            except Exception as exc:  # noqa: BLE001 - whatever it is, the listener keeps trying
                log.warning("feed listener cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
