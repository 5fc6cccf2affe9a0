"""The litestar application: routes, problem handlers, OpenAPI, observation, and the pool's lifetime."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema, SecurityScheme

import service
from service.api import ui
from service.api.bodies import CheckedRequest
from service.api.conversations import ConversationController
from service.api.forks import ForkController
from service.api.deps import provide_caller
from service.api.health import healthz, readyz
from service.api.history import HistoryController, feed_lifespan
from service.api.hygiene import cors, gzipped
from service.api.observe import Observer
from service.api.openai_compat import OpenAICompatController
from service.api.problems import HANDLERS
from service.api.replays import ReplayController, replays_lifespan
from service.api.turns import TurnController, turns_lifespan
from service.app.auth import Authenticator
from service.app.messages import AppendGroup
from service.config import Settings
from service.store.events import Store
from service.store.pool import Limits
from service.store.migrate import head_revision
from service.upstream import Registry

VERSION = "0.1.0"
# JSON stored before the nesting limit (service.domain.nesting) may be nearly 1,000 levels deep: as
# deep as the decoder then took. Reading and serving it recurses once per level on top of the
# request's own stack, which Python's default limit of 1,000 leaves no room for; this does, and
# its C stack (a few hundred bytes a level) stays far below a thread's.
RECURSION_LIMIT = 4000


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="convtree",
        version=VERSION,
        description=(service.__doc__ or "").strip()
        + " Every error is an RFC 9457 problem (application/problem+json) with a stable `type`.",
        path="/docs",
        render_plugins=[ui.docs_plugin()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="An API key.")
            }
        ),
        security=[{"bearer": []}],
        use_handler_docstrings=False,
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs between requests: nothing beyond asyncpg's own rollback of an
    unfinished transaction. convtree leaves no session state behind (its locks are transaction
    locks, planner settings are scoped to functions, LISTEN has a connection of its own), so the
    default reset (UNLISTEN, RESET ALL, … in one more round trip per request) is skipped."""


@asynccontextmanager
async def freeze_startup_heap(app: Litestar) -> AsyncIterator[None]:
    """Once everything has started, keep what start-up made (modules, the app, its routes: the
    bulk of the heap, and it lives as long as the process) out of the garbage collector's full
    collections. A deep context makes tens of thousands of objects, and each full collection they
    set off otherwise walks the whole heap again: 20 ms of a 90 ms depth-10,000 context."""
    gc.collect()
    gc.freeze()
    yield


def create_app(database_url: str, settings: Settings, registry: Registry | None = None) -> Litestar:
    """The app; `registry` (tests, benchmarks) replaces the model providers built from the
    environment at start-up, and stays its giver's to close."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        limits = Limits(
            connect_timeout=settings.database_connect_timeout,
            acquire_timeout=settings.pool_acquire_timeout,
            lock_timeout=settings.lock_timeout,
            statement_timeout=settings.statement_timeout,
            idle_in_transaction_timeout=settings.idle_in_transaction_timeout,
        )
        pool = await asyncpg.create_pool(
            database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=limits.connect_timeout,
            # Fixed planner settings are set per function where they matter. JIT is off: every
            # query here is short, and where the planner's estimates pass its thresholds compiling
            # costs hundreds of times what running takes. The application name lets the server
            # tell convtree's sessions apart.
            server_settings={"application_name": "convtree", "jit": "off", **limits.session_settings()},
            reset=_keep_session,
        )
        assert pool is not None
        store = Store(pool, limits)
        app.state.store = store
        app.state.auth = Authenticator(settings.key_cache_seconds)
        app.state.appends = AppendGroup(store)
        try:
            yield
        finally:
            await pool.close()

    def provide_store() -> Store:
        # No parameters, so litestar has nothing to parse or validate to call it on every request.
        return app.state.store

    observer = Observer(settings)
    app = Litestar(
        # Controllers are registered on the app itself, not through a nested Router: litestar's
        # automatic OPTIONS handler would otherwise keep a stale `Allow` list for merged routes.
        route_handlers=[
            ConversationController, ForkController, HistoryController, TurnController, OpenAICompatController,
            ReplayController,
            healthz, readyz, *ui.routers(), *observer.routes,
        ],
        dependencies={"caller": Provide(provide_caller), "store": Provide(provide_store, sync_to_thread=False)},
        # The feed's listener and the turns' generations need the store; they stop before it closes.
        lifespan=[
            lifespan,
            feed_lifespan(database_url, settings.database_connect_timeout),
            turns_lifespan(registry, settings),
            replays_lifespan(settings),
            observer.lifespan(),
            freeze_startup_heap,
        ],
        exception_handlers=HANDLERS,
        request_class=CheckedRequest,
        cors_config=cors(settings.cors_origins),
        logging_config=None,  # the process's logging is `convtree serve`'s to set (service.api.logs)
        openapi_config=openapi_config(),
        state=State({"schema_head": head_revision()}),
        request_max_body_size=settings.request_max_body_bytes,
        debug=False,
    )
    _document_validation_as_422(app)
    _document_streams(app)
    if settings.gzip_min_bytes > 0:
        app.asgi_handler = gzipped(app.asgi_handler, settings.gzip_min_bytes)
    observer.install(app)
    return app


def _document_validation_as_422(app: Litestar) -> None:
    """Litestar documents its own 400 for request validation on every route that takes input;
    convtree answers invalid input with a 422 problem, and a body that is not JSON at all with a
    400 problem, each listed on the routes where they can happen."""
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method)
            if operation is None or not operation.responses:
                continue
            response = operation.responses.get("400")
            if response is not None and "application/problem+json" not in (getattr(response, "content", None) or {}):
                del operation.responses["400"]


def _document_streams(app: Litestar) -> None:
    """A route that streams when asked (`stream: true`; its handler's `opt` says `streams`) answers
    200 `text/event-stream` then, beside its JSON answers: the document says so on its 200."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not handler.opt.get("streams") or route.path_format not in paths:
                continue
            for method in handler.http_methods:
                operation = getattr(paths[route.path_format], method.lower())
                ok = operation.responses.setdefault(
                    "200", OpenAPIResponse(description="With `stream: true`: the events.")
                )
                ok.content = {**(ok.content or {}), "text/event-stream": OpenAPIMediaType(schema=_SSE_EVENT)}


# One server-sent event as a client reads it: its name and its data (JSON text), and for feeds its id.
_SSE_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "event": Schema(type=OpenAPIType.STRING),
        "data": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING),
        "retry": Schema(type=OpenAPIType.INTEGER),
    },
)
