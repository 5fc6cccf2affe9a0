"""Which database failures are an outage (the same work may succeed once the database is back)
rather than a refusal or a bug: connections lost or refused, the server shutting down or starting,
out of connections, or no answer in time."""

from __future__ import annotations

import asyncpg


def is_outage(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            OSError,  # refused, reset, unreachable (ConnectionError is one)
            TimeoutError,
            asyncpg.PostgresConnectionError,  # the connection does not exist (any more), or failed
            asyncpg.InterfaceError,  # the connection was closed under the operation
            asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, starting up
            asyncpg.exceptions.InsufficientResourcesError,  # too many connections
        ),
    )
