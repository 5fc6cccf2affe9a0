"""A TCP proxy a test can cut: put it between the server and PostgreSQL to take the database away.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url(database_url)       # the same database, reached through the proxy
        proxy.cut()                         # every open connection dropped, new ones closed at once
        proxy.restore()                     # connections go through again

It runs its own event loop in a thread, so sync tests and a server in another thread can share it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        """Forward to `host`:`port`, or to the Unix socket of a server whose `host` is a directory."""
        self.target = (host, port)
        self.port = 0
        self._cut = False
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @classmethod
    def to(cls, database_url: str) -> TcpProxy:
        parts = urlsplit(database_url)
        query = dict(parse_qsl(parts.query))  # the embedded server's URL names its socket directory as ?host=
        port = int(query.get("port") or parts.port or 5432)
        return cls(query.get("host") or parts.hostname or "127.0.0.1", port)

    def url(self, database_url: str) -> str:
        """`database_url`, pointed at the proxy."""
        parts = urlsplit(database_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        self._call(self._server.wait_closed())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def cut(self) -> None:
        """Drop every connection now (as a database that went away does) and refuse the next ones."""
        self._cut = True

        async def drop() -> None:
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()

        self._call(drop())

    def restore(self) -> None:
        self._cut = False

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            client_writer.transport.abort()
            return
        host, port = self.target
        try:
            if host.startswith("/"):
                server_reader, server_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.transport.abort()
            return
        self._open.update((client_writer, server_writer))
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            for writer in (client_writer, server_writer):
                self._open.discard(writer)
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
