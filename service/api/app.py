"""The litestar application and convtree's composition root: routes, problem handlers, OpenAPI,
observation, and the app's services (built once per start, handed to controllers by name)."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
    SecurityScheme,
)

import service
from service.api import ui
from service.api.bodies import CheckedRequest
from service.api.conversations import ConversationController
from service.api.forks import ForkController
from service.api.deps import authenticated
from service.api.health import healthz, readyz
from service.api.history import HistoryController
from service.api.hygiene import cors, gzipped
from service.api.metrics import metered
from service.api.observe import Observer
from service.api.ollama import OllamaController
from service.api.openai_compat import OpenAICompatController, OpenAIController
from service.api.openai_conversations import OpenAIConversationsController
from service.api.problems import HANDLERS, MEDIA_TYPE, OPENAI_MEDIA_TYPE, openai_door, title_of
from service.api.replays import ReplayController
from service.api.responses import ResponsesController
from service.api.turns import TurnController
from service.app.caller import Caller
from service.app.services import Audit, Conversations, Events, Health, Items, Messages, Replays, Services, Transfer
from service.app.services import Responses, Turns, open_services
from service.config import Settings
from service.upstream import Registry

VERSION = service.__version__
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
        + " Every error is an RFC 9457 problem (application/problem+json) with a stable `type`, but on the"
        " OpenAI-compatible door (every path under `/openai/v1`, and its aliases `/v1/chat/completions` and"
        " `/v1/models`), where it is OpenAI's error object,"
        " `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}` (application/json), as OpenAI's clients read it.",
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

    observer = Observer(settings)
    metrics = observer.metrics
    root = _Root()

    @asynccontextmanager
    async def compose(app: Litestar) -> AsyncIterator[None]:
        # The providers are metered (when metrics are on) before any service holds them.
        meter = None if metrics is None else (lambda providers: metered(providers, metrics))
        async with open_services(database_url, settings, registry, meter) as services:
            # The controllers get the services through `root`; the server's shutdown and the
            # metrics' gauges read them from the app's state.
            root.services = app.state.services = services
            try:
                yield
            finally:
                del root.services

    app = Litestar(
        # Controllers are registered on the app itself, not through a nested Router: litestar's
        # automatic OPTIONS handler would otherwise keep a stale `Allow` list for merged routes.
        route_handlers=[
            ConversationController, ForkController, HistoryController, TurnController, OpenAICompatController,
            OpenAIController, OpenAIConversationsController, OllamaController, ReplayController,
            ResponsesController,
            healthz, readyz, *ui.routers(), *observer.routes,
        ],
        dependencies=root.providers(),
        # The services exist before the observer starts (its gauges read them) and stop after it.
        lifespan=[compose, observer.lifespan(), freeze_startup_heap],
        exception_handlers=HANDLERS,
        request_class=CheckedRequest,
        cors_config=cors(settings.cors_origins),
        logging_config=None,  # the process's logging is `convtree serve`'s to set (service.api.logs)
        openapi_config=openapi_config(),
        request_max_body_size=settings.request_max_body_bytes,
        debug=False,
    )
    _document_validation_as_422(app)
    _document_streams(app)
    _document_body_limit(app)
    if settings.gzip_min_bytes > 0:
        app.asgi_handler = gzipped(app.asgi_handler, settings.gzip_min_bytes)
    observer.install(app)
    return app


class _Root:
    """The services of the running app, handed to the handlers that name them.

    A handler's dependencies form one chain (the caller, then its service): litestar resolves
    dependencies that do not depend on each other in an anyio task group of their own, on every
    request, which costs a hot request like an append more than the rest of its dependencies. So
    each service's provider takes the caller, and the caller's provider reads the key service here.
    """

    services: Services  # from the app's start-up to its shutdown

    async def caller(self, request: Request) -> Caller:  # type: ignore[type-arg]
        # `Request` bare: litestar checks each argument with isinstance, which a parametrized
        # generic answers only by raising TypeError first, on every request.
        return await authenticated(request, self.services.keys)

    def conversations(self, caller: NamedDependency[Caller]) -> Conversations:
        return self.services.conversations

    def messages(self, caller: NamedDependency[Caller]) -> Messages:
        return self.services.messages

    def events(self, caller: NamedDependency[Caller]) -> Events:
        return self.services.events

    def audit(self, caller: NamedDependency[Caller]) -> Audit:
        return self.services.audit

    def transfer(self, caller: NamedDependency[Caller]) -> Transfer:
        return self.services.transfer

    def turns(self, caller: NamedDependency[Caller]) -> Turns:
        return self.services.turns

    def replays(self, caller: NamedDependency[Caller]) -> Replays:
        return self.services.replays

    def responses(self, caller: NamedDependency[Caller]) -> Responses:
        return self.services.responses

    def items(self, caller: NamedDependency[Caller]) -> Items:
        return self.services.items

    def health(self) -> Health:  # for the readiness probe, which has no caller
        return self.services.health

    def providers(self) -> dict[str, Provide]:
        areas = (
            self.conversations, self.messages, self.events, self.audit, self.transfer, self.turns, self.replays,
            self.items, self.health, self.responses,
        )  # fmt: skip
        # Named `<area>_service`: litestar takes a request field of a dependency's name for the
        # dependency's (a 500, not a 422), and a body may well have `messages` or `events`.
        return {
            "caller": Provide(self.caller),
            **{f"{area.__name__}_service": Provide(area, sync_to_thread=False) for area in areas},
        }


def _document_validation_as_422(app: Litestar) -> None:
    """Litestar documents its own 400 for request validation on every route that takes input;
    convtree answers invalid input with a 422 problem, and a body that is not JSON at all with a
    400 problem, each listed on the routes where they can happen."""
    for path, path_item in (app.openapi_schema.paths or {}).items():
        ours = _ERROR_MEDIA[openai_door(path)]
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method)
            if operation is None or not operation.responses:
                continue
            response = operation.responses.get("400")
            content = getattr(response, "content", None) or {}
            if response is not None and _schema_ref(content.get(ours[0])) != ours[1]:
                del operation.responses["400"]


def _document_streams(app: Litestar) -> None:
    """A route that streams when asked (`stream: true`; its handler's `opt` says `streams`) answers
    200 `text/event-stream` then, beside its JSON answers: the document says so on its 200. The
    Ollama door's (`streams: "ndjson"`) streams `application/x-ndjson`, a JSON answer a line."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            kind = handler.opt.get("streams")
            if not kind or route.path_format not in paths:
                continue
            for method in handler.http_methods:
                operation = getattr(paths[route.path_format], method.lower())
                ok = operation.responses.setdefault(
                    "200", OpenAPIResponse(description="With `stream: true`: the events.")
                )
                if kind == "ndjson":
                    line = (ok.content or {})["application/json"].schema
                    ok.content = {**(ok.content or {}), "application/x-ndjson": OpenAPIMediaType(schema=line)}
                else:
                    ok.content = {**(ok.content or {}), "text/event-stream": OpenAPIMediaType(schema=_SSE_EVENT)}


def _document_body_limit(app: Litestar) -> None:
    """Any route that takes a body refuses one over `request_max_body_bytes` with 413, before its
    handler runs: the document says so on each of them."""
    for path, item in (app.openapi_schema.paths or {}).items():
        media_type, ref = _ERROR_MEDIA[openai_door(path)]
        for method in ("post", "put", "patch"):
            operation = getattr(item, method)
            if operation is None or operation.request_body is None:
                continue
            operation.responses = operation.responses or {}
            operation.responses.setdefault(
                "413",
                OpenAPIResponse(
                    description=title_of(413),
                    content={media_type: OpenAPIMediaType(schema=Reference(ref=ref))},
                ),
            )


# How a route's errors are documented: (media type, schema), by whether it is of the OpenAI door.
_ERROR_MEDIA = {
    False: (MEDIA_TYPE, "#/components/schemas/Problem"),
    True: (OPENAI_MEDIA_TYPE, "#/components/schemas/OpenAIErrorBody"),
}


def _schema_ref(media: Any) -> str | None:
    schema = getattr(media, "schema", None)
    return getattr(schema, "ref", None)


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
