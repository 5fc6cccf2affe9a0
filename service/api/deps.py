"""What every handler may ask for: the caller, the store, and the idempotent-write wrapper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.datastructures import State

from service.app import idempotency
from service.app.caller import Caller
from service.store.events import Store

T = TypeVar("T")


async def provide_caller(request: Request[Any, Any, State]) -> Caller:
    return await request.app.state.auth.authenticate(
        request.headers.get("authorization"), request.scope["state"].get("request_id")
    )


def provide_store(state: State) -> Store:
    return state.store


def json_response(value: Any, status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(value), status_code=status, media_type="application/json", headers=headers
    )


async def write_once(
    request: Request[Any, Any, State],
    caller: Caller,
    store: Store,
    data: msgspec.Struct | None,
    operation: Callable[[Any], Awaitable[T]],
    respond: Callable[[T], tuple[int, Any, dict[str, str] | None]],
) -> Response[Any]:
    """Run a write once per Idempotency-Key: a retry gets the original status and body back."""
    key = request.headers.get("idempotency-key")
    body = b"" if data is None else msgspec.json.encode(data)
    fingerprint = idempotency.fingerprint(request.method, request.url.path, body)

    def encode(result: T) -> tuple[int, bytes]:
        status, value, _ = respond(result)
        return status, msgspec.json.encode(value)

    outcome = await idempotency.run(store, caller, key, fingerprint, operation, encode)
    if isinstance(outcome, idempotency.Replayed):
        return Response(
            content=outcome.body,
            status_code=outcome.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    status, value, headers = respond(outcome)
    return json_response(value, status, headers)
