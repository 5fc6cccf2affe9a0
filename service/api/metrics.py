"""Metrics in Prometheus's format: requests, the pool, appends, turns, model providers, the feed.

Each app has a registry of its own (two apps in one process, as in the tests, count apart).
Gauges of state (the pool, turns in flight, feed followers) are read when scraped, so requests
pay only for what they count: one histogram observation, and a counter where they append or
replay.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from litestar import Request, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.api.deps import header
from service.domain import errors
from service.upstream import Registry
from service.upstream.base import ChatRequest, Provider, StreamItem, TextDelta

# Requests and upstream calls: from a cached read (~1 ms) to a long model reply.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
APPEND_ROUTE = "/v1/conversations/{conversation_id}/messages"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "convtree_http_request_duration_seconds",
            "HTTP requests by method, route template and status, and how long they took",
            ("method", "route", "status"),
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.appends = Counter("convtree_appends", "Messages appended through POST …/messages", registry=r)
        self.replays = Counter(
            "convtree_idempotent_replays", "Writes answered from an earlier response (Idempotency-Key)",
            ("route",), registry=r,
        )  # fmt: skip
        self.database_errors = Counter(
            "convtree_database_errors", "Requests failed by a database error, by error", ("error",), registry=r
        )
        self.upstream_seconds = Histogram(
            "convtree_upstream_request_duration_seconds", "Model provider calls, start to end, by provider",
            ("provider",), buckets=UPSTREAM_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "convtree_upstream_first_token_seconds", "Time to a provider's first token, by provider",
            ("provider",), buckets=UPSTREAM_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "convtree_upstream_errors", "Model provider calls that failed, by provider and error",
            ("provider", "error"), registry=r,
        )  # fmt: skip
        self.state: Any = None  # the app's services (service.app.services), once they exist
        r.register(_StateCollector(self))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._children: dict[tuple[str, str, int], Any] = {}

    def request(self, method: str, route: str, status: int, seconds: float, replayed: bool) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:  # labels() takes a lock and builds a key: once per series, not per request
            child = self._children[key] = self.requests.labels(method, route, str(status))
        child.observe(seconds)
        if replayed:
            self.replays.labels(route).inc()
        elif status == 201 and route == APPEND_ROUTE and method == "POST":
            self.appends.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """What the pool, the generations and the feed hold at the moment of the scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._metrics.state
        store = getattr(state, "store", None)
        if store is not None:
            pool = store.pool
            size, idle = pool.get_size(), pool.get_idle_size()
            yield _gauge("convtree_db_pool_size", "Connections the pool holds open", size)
            yield _gauge("convtree_db_pool_max_size", "Connections the pool may open", pool.get_max_size())
            yield _gauge("convtree_db_pool_in_use", "Connections lent to a request", size - idle)
            yield _gauge("convtree_db_pool_waiting", "Requests waiting for a connection", _waiting(pool))
        generations = getattr(state, "generations", None)
        if generations is not None:
            yield _gauge("convtree_turns_in_flight", "Model replies being generated", generations.running)
        feed = getattr(state, "feed", None)
        if feed is not None:
            yield _gauge("convtree_feed_followers", "Feed readers waiting for new events", feed.followers)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _waiting(pool: Any) -> int:
    # asyncpg says how many connections are idle but not who waits for one: its queue of
    # connection holders does, and each waiter is a getter of that queue.
    queue = getattr(pool, "_queue", None)
    return len(getattr(queue, "_getters", ()) or ())


class MeteredProvider:
    """A provider whose calls are timed and whose failures are counted."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self._inner = inner
        self.name = inner.name
        self._seconds = metrics.upstream_seconds.labels(inner.name)
        self._first_token = metrics.first_token_seconds.labels(inner.name)
        self._errors = metrics.upstream_errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        started = time.perf_counter()
        first = True
        try:
            async with contextlib.aclosing(self._inner.stream(request)) as stream:
                async for item in stream:
                    if first and isinstance(item, TextDelta) and item.text:
                        first = False
                        self._first_token.observe(time.perf_counter() - started)
                    yield item
        except errors.UpstreamError as exc:
            self._errors.labels(self.name, type(exc).__name__).inc()
            raise
        finally:
            self._seconds.observe(time.perf_counter() - started)

    async def list_models(self) -> list[str]:
        return await self._inner.list_models()

    async def aclose(self) -> None:
        await self._inner.aclose()


def metered(registry: Registry, metrics: Metrics) -> Registry:
    """The same providers and configuration, each call timed and counted."""
    return Registry(registry.config, {n: MeteredProvider(registry.get(n), metrics) for n in registry.names()})


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The metrics, for Prometheus; behind a bearer token when one is configured."""
    token: str | None = request.app.state.metrics_token
    if token is not None:
        given = header(request, b"authorization") or ""
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise errors.Unauthorized("/metrics needs the metrics token as a bearer token.")
    body = request.app.state.metrics.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
