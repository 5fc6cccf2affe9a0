"""The asynchronous client: the same calls as Client, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from convtree.client import errors, models
from convtree.client._core import (
    DEFAULT_TIMEOUT,
    Call,
    Retry,
    SSEParser,
    TurnEvent,
    TurnStream,
    decode,
    decode_feed_event,
    path,
    raise_for_problem,
    resumable,
    should_retry,
)
from convtree.client._endpoints import Endpoints, Id


class AsyncClient(Endpoints):
    """convtree over HTTP: `AsyncClient("http://127.0.0.1:8000", key="ct_…")`, best used in an `async with`."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        retry: Retry = Retry(),
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call) -> Any:
        return decode(call, await self._send(call))

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """The answer to `call`, retried on connection errors, 503 and 429 (honouring Retry-After);
        a problem answer raised as its ProblemError. A streamed answer must be closed by the caller."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.send(call.request(self._http, stream=stream), stream=stream)
            except httpx.TransportError as exc:
                if not should_retry(call, attempt, self.retry, None):
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                await asyncio.sleep(self.retry.wait(attempt))
                continue
            if response.status_code >= 400:
                if stream:
                    await response.aread()
                    await response.aclose()
                if should_retry(call, attempt, self.retry, response.status_code):
                    await asyncio.sleep(self.retry.wait(attempt, response.headers.get("Retry-After")))
                    continue
                raise_for_problem(response)
            return response

    # --- pagination --------------------------------------------------------------------------

    async def iter_conversations(self, *, limit: int = 100) -> AsyncIterator[models.Conversation]:
        """Every conversation, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page: models.ConversationPage = await self.list_conversations(limit=limit, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def iter_events(
        self, conversation_id: Id, *, after: int = 0, limit: int = 100
    ) -> AsyncIterator[models.Event]:
        """The conversation's events after `after`, in order, a page at a time."""
        while True:
            page: models.EventPage = await self.events(conversation_id, after=after, limit=limit)
            for item in page.items:
                yield item
            if not page.items:
                return
            after = page.next_after

    # --- streams -----------------------------------------------------------------------------

    async def follow(self, *, after: int = 0) -> AsyncIterator[models.Event]:
        """The tenant's events after `after` as they happen (server-sent events), without end.
        A dropped connection is resumed from the last event seen (Last-Event-ID)."""
        failures = 0
        while True:
            call = Call(method="GET", path=path("events"), headers={"Accept": "text/event-stream"})
            if after:
                call.headers["Last-Event-ID"] = str(after)
            try:
                response = await self._send(call, stream=True)
                try:
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        sse = parser.feed(line)
                        if sse is None:
                            continue
                        event = decode_feed_event(sse)
                        if event is not None:
                            failures = 0
                            after = event.seq
                            yield event
                finally:
                    await response.aclose()
            except (httpx.TransportError, errors.TransportError) as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                await asyncio.sleep(self.retry.wait(failures))

    async def stream_turn(
        self, conversation_id: Id, content: str, *, idempotency_key: str | None = None, **options: Any
    ) -> AsyncIterator[TurnEvent]:
        """A turn streamed: TurnStarted, then Delta for each piece, then Done with the stored reply
        (or TurnFailed raised). A dropped stream is resumed by retrying with the same Idempotency-Key."""
        async for event in self._stream(self._turn_call(conversation_id, content, idempotency_key, options)):
            yield event

    async def stream_regenerate(
        self, conversation_id: Id, message_id: Id, *, idempotency_key: str | None = None, **options: Any
    ) -> AsyncIterator[TurnEvent]:
        """Another reply to `message_id`, streamed like stream_turn."""
        async for event in self._stream(self._regenerate_call(conversation_id, message_id, idempotency_key, options)):
            yield event

    async def _stream(self, call: Call) -> AsyncIterator[TurnEvent]:
        turn = TurnStream()
        attempt = 0
        while not turn.finished:
            attempt += 1
            try:
                response = await self._send(call, stream=True)
                try:
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        sse = parser.feed(line)
                        if sse is not None:
                            for event in turn.events(sse):
                                yield event
                finally:
                    await response.aclose()
                if not turn.finished:
                    raise httpx.RemoteProtocolError("the stream ended before its last event")
            except errors.ProblemError as exc:
                if not resumable(exc) or attempt >= self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.wait(attempt))
            except (httpx.TransportError, errors.TransportError) as exc:
                if attempt >= self.retry.attempts:
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                await asyncio.sleep(self.retry.wait(attempt))
