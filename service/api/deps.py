"""What every handler may ask for: the caller; and the answers it gives: JSON already encoded, a
write's outcome or its replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.types import ASGIApp, Receive, Scope, Send

from service.app import idempotency
from service.app.caller import Caller
from service.app.services import Keys

T = TypeVar("T")


async def authenticated(request: Request[Any, Any, Any], keys: Keys) -> Caller:
    """The caller the request's API key names (else Unauthorized), noted for the request's log line."""
    state = request.scope["state"]
    caller = await keys.authenticate(header(request, b"authorization"), state.get("request_id"))
    state["tenant"] = caller.tenant
    return caller


def header(request: Request[Any, Any, Any], name: bytes) -> str | None:
    """The first value of header `name` (lower case), read from the ASGI scope: litestar builds a
    new Headers object at each `request.headers`, which hot requests do not need."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class JSONResponse(Response[bytes]):
    """A response whose JSON body is already encoded. Without cookies, background tasks or headers
    set on a router layer (convtree sets none), it goes to the server as two ready-made ASGI
    messages, sparing a hot request like an append litestar's generic assembly (header objects,
    media type lookups, typing checks), measured at a tenth of such a request's framework time."""

    status_code: int  # always given here (litestar's may be None, meaning 200)

    def __init__(self, content: bytes, status_code: int, headers: dict[str, str] | None = None) -> None:
        # Response.__init__'s generality (cookie and header mappings, checked with typing's
        # isinstance) is not needed here: the same attributes, set directly.
        self.content = content
        self.status_code = status_code
        self.headers = dict(headers) if headers else {}
        self.media_type = "application/json"
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.response_type_encoders = {}

    def to_asgi_response(  # type: ignore[override]
        self, app: Any, request: Request[Any, Any, Any], **kwargs: Any
    ) -> ASGIApp:
        layered = ("background", "cookies", "encoded_headers", "headers", "is_head_response")
        if self.cookies or self.background is not None or any(kwargs.get(k) for k in layered):
            return super().to_asgi_response(app, request, **kwargs)
        body = self.content
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        return _Encoded(self.status_code, headers, body)


class _Encoded:
    """An ASGI app that sends one finished response."""

    __slots__ = ("_start", "_body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._start = {"type": "http.response.start", "status": status, "headers": headers}
        self._body = {"type": "http.response.body", "body": body, "more_body": False}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)  # type: ignore[arg-type]
        await send(self._body)  # type: ignore[arg-type]


def json_response(value: Any, status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return JSONResponse(msgspec.json.encode(value), status, headers)


def keyed(request: Request[Any, Any, Any], data: msgspec.Struct | None) -> idempotency.Keyed | None:
    """The request's Idempotency-Key, if it has one, with the fingerprint of the request (method,
    path and body as decoded: the same request is the same whatever its JSON's spacing)."""
    key = header(request, b"idempotency-key")
    if key is None:
        return None
    body = b"" if data is None else msgspec.json.encode(data)
    return idempotency.Keyed(key, idempotency.fingerprint(request.method, request.url.path, body))


def written(
    outcome: T | idempotency.Replayed, respond: Callable[[T], tuple[int, Any, dict[str, str] | None]]
) -> Response[Any]:
    """A creating write's answer: `respond`'s status, body and headers for what it did, or the
    original status and body again for a retry of its Idempotency-Key."""
    if isinstance(outcome, idempotency.Replayed):
        return JSONResponse(outcome.body, outcome.status, REPLAYED)
    status, value, headers = respond(outcome)
    return json_response(value, status, headers)


REPLAYED = {"Idempotent-Replayed": "true"}
