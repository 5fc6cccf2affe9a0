"""Connections with bounded waits: the pool's limits, the conversation gates, and database
failures as domain errors (the one place asyncpg's and the network's exceptions are translated).

Every wait on the database has an end. Taking a connection from the pool, a row lock, a
statement, a transaction left idle: each is bounded (Limits), and running out of it is a
`DatabaseBusy`; a database that cannot be reached, or a connection lost mid-request, is a
`DatabaseUnavailable`. Both tell the client to retry shortly; neither is a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import asyncpg
import msgspec

from service.domain.errors import ConvtreeError, DatabaseBusy, DatabaseUnavailable, Unavailable
from service.store.session import Connection


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """How long (seconds) the service waits on the database before answering 503 instead (0: no
    limit, except for connecting)."""

    connect_timeout: float = 5.0  # to open a connection
    acquire_timeout: float = 5.0  # for a free connection of the pool
    lock_timeout: float = 5.0  # for a row lock (a conversation's, an Idempotency-Key's)
    statement_timeout: float = 30.0  # for any one statement
    idle_in_transaction_timeout: float = 60.0  # a transaction left idle is ended by the server

    def session_settings(self) -> dict[str, str]:
        """The server settings every serving connection starts with."""
        return {
            "lock_timeout": _ms(self.lock_timeout),
            "statement_timeout": _ms(self.statement_timeout),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction_timeout),
        }


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms" if seconds > 0 else "0"  # 0: no limit, as in PostgreSQL


async def open_pool(database_url: str, limits: Limits, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """The serving process's pool (and bench/'s in-process lines', which measure a use case as the
    server runs it): sessions with the `limits`' settings, and no reset statement between requests."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        timeout=limits.connect_timeout,
        # Fixed planner settings are set per function where they matter. JIT is off: every
        # query here is short, and where the planner's estimates pass its thresholds compiling
        # costs hundreds of times what running takes. The application name lets the server
        # tell convtree's sessions apart.
        server_settings={"application_name": "convtree", "jit": "off", **limits.session_settings()},
        reset=keep_session,
    )
    assert pool is not None
    return pool


async def keep_session(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs between requests: nothing beyond asyncpg's own rollback of an
    unfinished transaction. convtree leaves no session state behind (its locks are transaction
    locks, planner settings are scoped to functions, LISTEN has a connection of its own), so the
    default reset (UNLISTEN, RESET ALL, … in one more round trip per request) is skipped."""


# A wait that ran out, or a conflict the database resolved by giving up one side: retrying helps.
_BUSY = (
    asyncpg.LockNotAvailableError,  # lock_timeout
    asyncpg.QueryCanceledError,  # statement_timeout
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.InsufficientResourcesError,  # too many connections, out of memory or disk
    asyncpg.IdleInTransactionSessionTimeoutError,
    TimeoutError,  # the pool had no free connection in time (and asyncio's own timeouts)
)
# The database cannot be reached, or went away under a request.
_GONE = (
    OSError,  # refused, reset, unreachable
    asyncpg.PostgresConnectionError,  # 08xxx
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.OperatorInterventionError,  # terminated by an administrator, or a crash
    asyncpg.ConnectionDoesNotExistError,  # closed in the middle of an operation
)


def database_error(exc: BaseException, lost: bool) -> Unavailable | None:
    """The domain error for a failure of the database or the way to it; None for anything else (a
    bug, which stays a 500). `lost`: the connection was closed by the time it failed."""
    if isinstance(exc, ConvtreeError):
        return None
    if isinstance(exc, _BUSY):
        return DatabaseBusy()
    if isinstance(exc, _GONE) or (lost and isinstance(exc, asyncpg.InterfaceError)):
        return DatabaseUnavailable()
    return None



def outage(exc: BaseException) -> Unavailable | None:
    """The outage `exc`, or an error it was raised from, is (the database away or busy: the same
    work may succeed once it is back, or less busy); None for a refusal or a bug."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            return None
        if isinstance(cause, Unavailable):
            return cause
        found = database_error(cause, lost=True)
        if found is not None:
            return found
        cause = cause.__cause__
    return None


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is an outage (see `outage`) rather than a refusal or a bug."""
    return outage(exc) is not None


@asynccontextmanager
async def connection(pool: asyncpg.Pool, limits: Limits) -> AsyncIterator[Connection]:
    """A connection of the pool, waited for at most `acquire_timeout`; what fails while it is held
    (or while it is taken) comes out as a domain error when the database is to blame."""
    conn = None
    try:
        async with pool.acquire(timeout=limits.acquire_timeout or None) as conn:
            yield conn
    except Exception as exc:
        error = database_error(exc, lost=conn is None or _closed(conn))
        if error is None:
            raise
        raise error from exc


def _closed(conn: Connection) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # released to the pool already (it was broken, or it is fine)
        return True


class Gates:
    """At most one transaction per conversation of this process holds a connection while it waits
    for that conversation's lock; the others queue here, holding none, for at most the lock
    timeout. A conversation held for long by someone else therefore ties up one connection of the
    pool, not all of them: other conversations and /readyz go on being served."""

    def __init__(self) -> None:
        self._gates: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable, timeout: float) -> AsyncIterator[None]:
        lock, users = self._gates.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            try:
                # wait_for, not asyncio.timeout: a lock granted just as the time runs out is kept
                # (and released below), never left taken by a waiter that gave up.
                await asyncio.wait_for(lock.acquire(), timeout or None)
            except TimeoutError as exc:
                raise DatabaseBusy(
                    "The conversation is locked by another writer for longer than the lock timeout; retry later."
                ) from exc
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if not users[0]:
                del self._gates[key]

    def __len__(self) -> int:
        return len(self._gates)
