"""The command line's expected failures: each one line on stderr and an exit code of its own.

    10  the database cannot be reached (nothing listens, unknown host, no such database)
    11  the database refused the credentials (unknown user, wrong password)
    12  the database's schema is older than this convtree: run `convtree migrate`
    13  the port to serve on is taken
    14  a CONVTREE_* variable holds a value convtree cannot use (CONVTREE_PORT=abc)

1 is a command's own "no" (`keys revoke` that revoked nothing, `verify` that found a fault), 2 a
usage error, 3 a server that could not start for another reason.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.app.schema import MigrationNeeded
from service.config import InvalidSetting

DATABASE_UNREACHABLE = 10
WRONG_CREDENTIALS = 11
MIGRATION_NEEDED = 12
PORT_TAKEN = 13
INVALID_SETTING = 14


class PortTaken(Exception):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot serve on {host}:{port}: the port is taken by another process")


class Failure(Exception):
    """An expected failure, as the command line reports it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def public_url(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def check_port_free(host: str, port: int) -> None:
    """Raise PortTaken if nothing could listen on host:port now (bound as uvicorn binds it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # let the server report a host it cannot resolve
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
                raise PortTaken(host, port) from exc
            raise


def failure(exc: BaseException, database_url: str | None) -> Failure | None:
    """The expected failure `exc` is, or was caused by; None for anything else (a bug: let it show)."""
    where = f" at {public_url(database_url)}" if database_url else ""
    for cause in _chain(exc):
        if isinstance(cause, PortTaken):
            return Failure(PORT_TAKEN, str(cause))
        if isinstance(cause, InvalidSetting):
            return Failure(INVALID_SETTING, str(cause))
        if isinstance(cause, MigrationNeeded):
            return Failure(MIGRATION_NEEDED, str(cause))
        if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
            return Failure(WRONG_CREDENTIALS, f"the database{where} refused the credentials: {_first_line(cause)}")
        if isinstance(cause, asyncpg.InvalidCatalogNameError | asyncpg.CannotConnectNowError):
            return Failure(DATABASE_UNREACHABLE, f"cannot reach the database{where}: {_first_line(cause)}")
        if isinstance(cause, ConnectionError | TimeoutError | socket.gaierror | asyncpg.ConnectionDoesNotExistError):
            return Failure(DATABASE_UNREACHABLE, f"cannot reach the database{where}: {_first_line(cause)}")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """exc, then what caused it (SQLAlchemy keeps the driver's error in `orig`), without cycles."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                pending.append(nested)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
