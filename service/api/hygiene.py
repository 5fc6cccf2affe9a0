"""HTTP hygiene: CORS for the origins allowed, gzip for large responses, and ETags on reads
whose answer does not move, answered with 304 when the client has it already."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.config.cors import CORSConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from service.api.deps import JSONResponse, header, json_response
from service.app.replay import AsOf

GZIP_LEVEL = 6  # zlib's default: most of level 9's saving on JSON for a third of its time
# A body this large is compressed at level 1: a deep context's 7 MB took 4.6x the CPU at level 6
# for an answer 23% smaller (BENCHMARKS.md, issue 14 goal 3), and the server is busy all that time.
LARGE_BODY = 256 * 1024
LARGE_GZIP_LEVEL = 1
# Revalidate every time: a redaction changes how a message and its past are shown, and then the tag.
CACHE_CONTROL = "private, no-cache"
NOT_MODIFIED = ResponseSpec(
    data_container=None,
    description="Not modified: the `ETag` sent as `If-None-Match` is still the answer's",
    generate_examples=False,
)


def cors(origins: tuple[str, ...]) -> CORSConfig | None:
    """Browsers on these origins may call the API (and see the headers it answers with)."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match", "If-None-Match",
                       "X-Request-Id", "Last-Event-ID"],
        expose_headers=["ETag", "Location", "X-Request-Id", "Idempotent-Replayed", "Retry-After"],
        max_age=600,
    )  # fmt: skip


def cached(request: Request[Any, Any, Any], value: Any) -> Response[Any]:
    """`value` with a tag of its encoding; a 304 without a body when the client already holds it."""
    body = msgspec.json.encode(value)
    tag = 'W/"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    held = header(request, b"if-none-match")
    if held is not None and _matches(held, tag):
        return Response(b"", status_code=304, headers=headers)
    return JSONResponse(body, 200, headers)


def read_answer(request: Request[Any, Any, Any], value: Any, past: AsOf | None) -> Response[Any]:
    """A read's answer: as of now it may move, so it is sent as is; as of a `past` event it never
    moves, so it is `cached`."""
    return json_response(value, 200) if past is None else cached(request, value)


def _matches(held: str, tag: str) -> bool:
    # Weak comparison (RFC 9110 13.1.2): W/"x" and "x" name the same answer.
    opaque = tag[2:]
    return any(t.strip() == "*" or t.strip().removeprefix("W/") == opaque for t in held.split(","))


def gzipped(app: ASGIApp, minimum: int) -> ASGIApp:
    """Compress responses of at least `minimum` bytes for clients that accept gzip. A streamed
    body is compressed chunk by chunk, each flushed as it goes; event streams are left alone,
    since a compressor holds back what it has not yet filled a block with."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not _accepts_gzip(scope["headers"]):
            await app(scope, receive, send)
            return
        start: HTTPResponseStartEvent | None = None
        compressor: zlib._Compress | None = None
        plain = False

        async def send_gzipped(message: Message) -> None:
            nonlocal start, compressor, plain
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or plain:
                await send(message)
                return
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            assert start is not None, "ASGI sends a response's start before its body"
            if compressor is None:
                if not more and len(body) < minimum or not _compressible(start):
                    plain = True
                    await send(start)
                    await send(message)
                    return
                level = LARGE_GZIP_LEVEL if not more and len(body) >= LARGE_BODY else GZIP_LEVEL
                compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
                if not more:
                    body = compressor.compress(body) + compressor.flush()
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({**message, "body": body})
                    return
                await send({**start, "headers": headers})
            data = compressor.compress(body)
            data += compressor.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
            await send({**message, "body": data})

        await app(scope, receive, send_gzipped)
        if start is not None and compressor is None and not plain:
            await send(start)  # a response that ended without a body message

    return middleware


def _accepts_gzip(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key == b"accept-encoding":
            return b"gzip" in value
    return False


def _compressible(start: HTTPResponseStartEvent) -> bool:
    if start["status"] < 200 or start["status"] in (204, 304):
        return False
    for key, value in start.get("headers", []):
        if key == b"content-encoding" or (key == b"content-type" and value.startswith(b"text/event-stream")):
            return False
    return True
