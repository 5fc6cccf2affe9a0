"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator
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


class Client(Endpoints):
    """convtree over HTTP: `Client("http://127.0.0.1:8000", key="ct_…")`, best used in a `with`."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        retry: Retry = Retry(),
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call) -> Any:
        return decode(call, self._send(call))

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """The answer to `call`, retried on connection errors, 503 and 429 (honouring Retry-After);
        a problem answer raised as its ProblemError. A streamed answer must be closed by the caller."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.send(call.request(self._http, stream=stream), stream=stream)
            except httpx.TransportError as exc:
                if not should_retry(call, attempt, self.retry, None):
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                time.sleep(self.retry.wait(attempt))
                continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                    response.close()
                if should_retry(call, attempt, self.retry, response.status_code):
                    time.sleep(self.retry.wait(attempt, response.headers.get("Retry-After")))
                    continue
                raise_for_problem(response)
            return response

    # --- pagination --------------------------------------------------------------------------

    def iter_conversations(self, *, limit: int = 100) -> Iterator[models.Conversation]:
        """Every conversation, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page: models.ConversationPage = self.list_conversations(limit=limit, cursor=cursor)
            yield from page.items
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    def iter_events(self, conversation_id: Id, *, after: int = 0, limit: int = 100) -> Iterator[models.Event]:
        """The conversation's events after `after`, in order, a page at a time."""
        while True:
            page: models.EventPage = self.events(conversation_id, after=after, limit=limit)
            yield from page.items
            if not page.items:
                return
            after = page.next_after

    # --- streams -----------------------------------------------------------------------------

    def follow(self, *, after: int = 0) -> Iterator[models.Event]:
        """The tenant's events after `after` as they happen (server-sent events), without end.
        A dropped connection is resumed from the last event seen (Last-Event-ID)."""
        failures = 0
        while True:
            call = Call(method="GET", path=path("events"), headers={"Accept": "text/event-stream"})
            if after:
                call.headers["Last-Event-ID"] = str(after)
            try:
                response = self._send(call, stream=True)
                try:
                    parser = SSEParser()
                    for line in response.iter_lines():
                        sse = parser.feed(line)
                        if sse is None:
                            continue
                        event = decode_feed_event(sse)
                        if event is not None:
                            failures = 0
                            after = event.seq
                            yield event
                finally:
                    response.close()
            except (httpx.TransportError, errors.TransportError) as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                time.sleep(self.retry.wait(failures))

    def stream_turn(
        self, conversation_id: Id, content: str, *, idempotency_key: str | None = None, **options: Any
    ) -> Iterator[TurnEvent]:
        """A turn streamed: TurnStarted, then Delta for each piece, then Done with the stored reply
        (or TurnFailed raised). A dropped stream is resumed by retrying with the same Idempotency-Key."""
        yield from self._stream(self._turn_call(conversation_id, content, idempotency_key, options))

    def stream_regenerate(
        self, conversation_id: Id, message_id: Id, *, idempotency_key: str | None = None, **options: Any
    ) -> Iterator[TurnEvent]:
        """Another reply to `message_id`, streamed like stream_turn."""
        yield from self._stream(self._regenerate_call(conversation_id, message_id, idempotency_key, options))

    def _stream(self, call: Call) -> Iterator[TurnEvent]:
        turn = TurnStream()
        attempt = 0
        while not turn.finished:
            attempt += 1
            try:
                response = self._send(call, stream=True)
                try:
                    parser = SSEParser()
                    for line in response.iter_lines():
                        sse = parser.feed(line)
                        if sse is not None:
                            yield from turn.events(sse)
                finally:
                    response.close()
                if not turn.finished:
                    raise httpx.RemoteProtocolError("the stream ended before its last event")
            except errors.ProblemError as exc:
                if not resumable(exc) or attempt >= self.retry.attempts:
                    raise
                time.sleep(self.retry.wait(attempt))
            except (httpx.TransportError, errors.TransportError) as exc:
                if attempt >= self.retry.attempts:
                    raise errors.TransportError(str(exc) or type(exc).__name__) from exc
                time.sleep(self.retry.wait(attempt))
