"""What a client may send before the app sees its request: bounded header bytes, bounded time.

uvicorn's httptools protocol parses any amount of header bytes (tens of megabytes stall the event
loop while the parser joins them) and never times out a request that is only partly sent: its
keep-alive timer runs between requests only, and any byte disarms it. This protocol adds both
bounds below the app, where they can act before a request exists:

- the request line and headers may take `request_max_header_bytes`; more is refused with a 431
  problem and the connection is closed;
- the headers must be complete `request_header_timeout_seconds` after the connection opened or
  the request's first byte came, and the body `request_body_timeout_seconds` after the headers;
  a request too slow is answered 408 and the connection closed. Once a request has arrived in
  full, no bound applies: a streamed reply or a long-poll lasts as long as it needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.api.problems import Problem, problem_type
from service.config import Settings


def _refusal(status: int, slug: str, title: str, detail: str) -> bytes:
    body = msgspec.json.encode(Problem(type=problem_type(slug), title=title, status=status, detail=detail))
    head = (
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit and request read deadlines."""

    max_header_bytes = 32 * 1024
    header_timeout = 10.0
    body_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True  # the next bytes belong to a request's line and headers
        self._header_bytes = 0  # how many of them came so far
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # While headers are awaited, the parser is fed no more than the bytes they may still take:
        # whatever follows is fed once they are complete, or refused if they are not.
        while self._awaiting_headers and data:
            budget = self.max_header_bytes - self._header_bytes
            if budget <= 0:
                self._refuse_headers()
                return
            piece, data = data[:budget], data[budget:]
            self._header_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        super().on_headers_complete()
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _answering(self) -> bool:
        """Whether a response is being written on this connection now (its bytes must not be cut into)."""
        return self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete

    def _refuse_headers(self) -> None:
        if not self._answering():
            detail = f"The request line and headers may take {self.max_header_bytes} bytes."
            self.transport.write(_refusal(431, "header-fields-too-large", "Request header fields too large", detail))
        self.transport.close()

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._answering():
            # The app already answers this request: the connection ends with that answer.
            self.cycle.keep_alive = False
            return
        if self._awaiting_headers:
            waited_for = self._header_bytes > 0  # else an idle connection: closed without a word
        else:
            # Else answered already, its body unread (or taken over by an upgrade: no cycle).
            waited_for = self.cycle is not None and not self.cycle.response_complete
        if waited_for:
            detail = "The request did not arrive in time."
            self.transport.write(_refusal(408, "request-timeout", "Request timeout", detail))
        self.transport.close()


def protocol(settings: Settings) -> type[BoundedHttpToolsProtocol]:
    """The HTTP protocol class for uvicorn, with the limits `settings` set."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.request_max_header_bytes,
            "header_timeout": settings.request_header_timeout_seconds,
            "body_timeout": settings.request_body_timeout_seconds,
        },
    )


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for what a client may send: the bounded protocol, and how long an idle
    connection is kept between requests."""
    return {
        "http": protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        # Only in effect if the h11 protocol is chosen instead: the same header bound.
        "h11_max_incomplete_event_size": settings.request_max_header_bytes,
    }
