"""The one wrapper every HTTP request passes through: its request id, its log line, its metrics.

It wraps the whole app (litestar's own middleware runs only once a route has matched), so an
unknown path, a 405 or a refused body has its request id, its line and its count too.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from service.api import logs, tracing
from service.api.logs import RequestLine, RequestLog
from service.api.metrics import Metrics, metrics_endpoint
from service.domain import errors
from service.config import Settings

_REQUEST_ID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
UNMATCHED = "unmatched"  # the route of a request no route took: paths are not metric labels
# A database away or busy is a 503 (errors.Unavailable) the problem handler notes for the count; a
# raw driver error reaching the 500 handler is a bug in that translation, and counted too.
DATABASE_ERRORS = (errors.Unavailable, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-Id when it is sane (1–128 characters of [A-Za-z0-9-_.:]), else None."""
    for key, value in headers:
        if key == b"x-request-id":
            if 0 < len(value) <= 128 and _REQUEST_ID_CHARS.issuperset(value):
                return value.decode("ascii")
            break
    return None


class RequestIds:
    """New request ids: 32 hex digits, a random half drawn once per process and a count (a
    uuid4 per request costs a system call for its randomness; ids need to be unique, not secret)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


class Observer:
    """Request ids, request lines and metrics, as the settings ask."""

    def __init__(self, settings: Settings, log: RequestLog | None = None) -> None:
        self.settings = settings
        self.log = log or RequestLog(settings.log_level, settings.log_format)
        self.metrics = Metrics() if settings.metrics else None

    @property
    def routes(self) -> list[Any]:
        """`/metrics` on the API's port, unless metrics are off or have a port of their own."""
        return [metrics_endpoint] if self.metrics is not None and self.settings.metrics_port is None else []

    def lifespan(self) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
        """Once the services exist: read their gauges, and serve /metrics on its own port when asked to."""

        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncIterator[None]:
            metrics = self.metrics
            app.state.metrics = metrics
            app.state.metrics_token = self.settings.metrics_token
            if metrics is None:
                yield
                return
            metrics.state = app.state.services  # the providers are metered as the services are built
            port = self.settings.metrics_port
            if port is None:
                yield
                return
            from prometheus_client import start_http_server

            server, thread = start_http_server(port, addr=self.settings.host, registry=metrics.registry)
            try:
                yield
            finally:
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)

        return lifespan

    def install(self, app: Litestar) -> None:
        """Wrap the app's request handling (after litestar has built it) in this observer, and in
        OpenTelemetry's spans when its environment asks for them (read by its SDK in any case)."""
        handler = app.asgi_handler
        if tracing.wanted(os.environ):
            handler = tracing.traced(handler, os.environ)
        app.asgi_handler = self.wrap(handler)

    def wrap(self, handler: ASGIApp) -> ASGIApp:
        info = self.log.info
        error = self.log.error
        metrics = self.metrics
        lines = self.log.enabled  # a line for every request (info), or for failures only
        new_id = RequestIds().new

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await handler(scope, receive, send)
                return
            started = time.perf_counter()
            rid = request_id(scope["headers"]) or new_id()
            state = scope["state"]
            state["request_id"] = rid
            id_header = (b"x-request-id", rid.encode())
            status = 500
            replayed = False

            async def send_with_id(message: Any) -> None:
                nonlocal status, replayed
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = message.get("headers") or []
                    for key, _ in headers:
                        if key == b"idempotent-replayed":
                            replayed = True
                    message["headers"] = [*headers, id_header]
                await send(message)

            failure: BaseException | None = None
            try:
                await handler(scope, receive, send_with_id)
            except Exception as exc:  # one that escaped the problem handlers (a broken stream): logged here
                failure = exc
                raise
            finally:
                seconds = time.perf_counter() - started
                route = scope.get("path_template") or UNMATCHED
                method = scope["method"]
                failure = failure or state.get("error")
                if metrics is not None:
                    metrics.request(method, route, status, seconds, replayed)
                    database_error = state.get("database_error") or failure
                    if database_error is not None and isinstance(database_error, DATABASE_ERRORS):
                        metrics.database_errors.labels(type(database_error).__name__).inc()
                failed = status >= 500 or failure is not None
                if failed or lines:
                    line = RequestLine(
                        method=method,
                        route=route if route is not UNMATCHED else scope["path"],
                        status=status,
                        duration_ms=round(seconds * 1000, 3),
                        tenant=state.get("tenant"),
                        conversation_id=(scope.get("path_params") or {}).get("conversation_id"),
                        request_id=rid,
                    )
                    if failed:
                        error("request", exc_info=failure, **{f: getattr(line, f) for f in logs.REQUEST_FIELDS})
                    else:
                        info(line)

        return observed
