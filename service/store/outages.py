"""Which database failures are an outage (the same work may succeed once the database is back, or
less busy) rather than a refusal or a bug: connections lost or refused, the server shutting down
or starting, out of connections, or no answer in time."""

from __future__ import annotations

import asyncpg

_OUTAGES = (
    OSError,  # refused, reset, unreachable (ConnectionError is one)
    TimeoutError,  # no connection, or no answer, in time
    asyncpg.PostgresConnectionError,  # the connection does not exist (any more), or failed
    asyncpg.InterfaceError,  # the connection was closed under the operation
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout
    asyncpg.exceptions.QueryCanceledError,  # statement_timeout
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from (an error of ours translating one of these),
    is an outage."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            return False
        if isinstance(cause, _OUTAGES):
            return True
        cause = cause.__cause__
    return False
