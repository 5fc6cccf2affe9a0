"""Server-sent events for streamed replies: the wire encoding and the streaming response.

litestar's `Stream` carries them (it cancels the stream the moment the client disconnects); the
events are encoded here rather than by its `ServerSentEvent`, which hops to a worker thread before
the first event and builds each one through a StringIO and a regex split. Every `data` here is one
line of JSON (msgspec never writes a raw newline), so one `data:` field per event suffices.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from litestar.response import Stream

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may buffer a stream


# A comment line: ignored by every SSE client, it keeps proxies from closing a quiet stream.
KEEPALIVE = b": keep-alive\n\n"


def event(name: str | None, data: bytes, position: int | None = None) -> bytes:
    """One event; `position` is its `id:`, what a client that lost the stream sends back as
    `Last-Event-ID` to resume after it."""
    head = b"event: " + name.encode() + b"\n" if name is not None else b""
    if position is not None:
        head += b"id: %d\n" % position
    return head + b"data: " + data + b"\n\n"


async def replay(*events: bytes) -> AsyncIterator[bytes]:
    """Events known already (a retried turn's): yielded as they are (litestar would run a plain
    iterable's `next` on a worker thread)."""
    for e in events:
        yield e


def response(events: AsyncIterable[bytes], headers: dict[str, str] | None = None) -> Stream:
    return Stream(events, media_type=MEDIA_TYPE, status_code=200, headers={**HEADERS, **(headers or {})})
