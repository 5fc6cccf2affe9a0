"""What the sync and async clients share: how a call is described, retried, decoded, and streamed."""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from convtree.client import errors
from convtree.client.models import Delta, Done, Event, Message, Problem, StreamProblem, TurnStarted

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)  # a stream may be quiet for long
TURN_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=600.0)  # a whole reply before the first byte
RETRIED_STATUSES = frozenset({429, 503})


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """How often and how long to try again after a connection error, a 503 or a 429."""

    attempts: int = 4  # tries in all, the first included
    backoff: float = 0.25  # the first wait; doubled after each try
    max_wait: float = 30.0  # the longest single wait, a server's Retry-After included

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1)."""
        told = parse_retry_after(retry_after)
        chosen = told if told is not None else self.backoff * 2 ** (attempt - 1)
        return max(0.0, min(chosen, self.max_wait))


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


class Call(msgspec.Struct, kw_only=True):
    """One logical call: retried as a whole, with the same Idempotency-Key each time."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None  # JSON-encoded with msgspec
    content: bytes | None = None  # sent as is (an import)
    headers: dict[str, str] = {}
    decode: Any = None  # the struct the answer decodes to; None: the raw bytes
    retry_safe: bool = True
    slow: bool = False  # a model's whole reply: read for longer than the default

    def request(self, client: httpx.Client | httpx.AsyncClient, *, stream: bool = False) -> httpx.Request:
        headers = dict(self.headers)
        content = self.content
        if self.body is not None:
            content = msgspec.json.encode(self.body)
            headers.setdefault("Content-Type", "application/json")
        extensions = None
        if stream or self.slow:
            extensions = {"timeout": (STREAM_TIMEOUT if stream else TURN_TIMEOUT).as_dict()}
        return client.build_request(
            self.method, self.path, params=self.params, content=content, headers=headers, extensions=extensions
        )


def writing(method: str, path: str, body: Any, decode: Any, idempotency_key: str | None, **kwargs: Any) -> Call:
    """A call that creates something: it carries an Idempotency-Key (the caller's, or a new one), so
    that its retries are answered with the first outcome instead of writing twice."""
    key = idempotency_key or str(uuid.uuid4())
    return Call(method=method, path=path, body=body, decode=decode, headers={"Idempotency-Key": key}, **kwargs)


def clean(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the fields left unset, so the server's defaults apply."""
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in body.items() if v is not None}


def should_retry(call: Call, attempt: int, retry: Retry, status: int | None) -> bool:
    if not call.retry_safe or attempt >= retry.attempts:
        return False
    return status is None or status in RETRIED_STATUSES


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    raise errors.problem_error(problem_of(response))


def problem_of(response: httpx.Response) -> Problem:
    try:
        return msgspec.json.decode(response.content, type=Problem)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        pass
    return Problem(
        type="about:blank",
        title=response.reason_phrase or "Error",
        status=response.status_code,
        detail=response.text[:500] or None,
        request_id=response.headers.get("X-Request-Id"),
    )


def decode(call: Call, response: httpx.Response) -> Any:
    if call.decode is None:
        return response.content
    return msgspec.json.decode(response.content, type=call.decode)


class ServerSentEvent(msgspec.Struct, frozen=True):
    event: str | None
    data: str
    id: str | None


class SSEParser:
    """Server-sent events from lines (the text/event-stream format), one event per blank line."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = ServerSentEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None  # a comment: keep-alive
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None


TurnEvent = TurnStarted | Delta | Done


class TurnStream:
    """Turns a streamed turn's server-sent events into TurnStarted, Delta and Done, across resumes:
    a retried turn's server replays `turn` then `done`, so what the caller has seen is not repeated
    and the text it missed arrives as one last Delta."""

    def __init__(self) -> None:
        self.started = False
        self.text = ""
        self.finished = False

    def events(self, sse: ServerSentEvent) -> list[TurnEvent]:
        if sse.event == "turn":
            if self.started:
                return []
            self.started = True
            return [msgspec.json.decode(sse.data, type=TurnStarted)]
        if sse.event == "delta":
            delta = msgspec.json.decode(sse.data, type=Delta)
            self.text += delta.text
            return [delta]
        if sse.event == "done":
            message = msgspec.json.decode(sse.data, type=Message)
            self.finished = True
            out: list[TurnEvent] = []
            said = message.content if isinstance(message.content, str) else ""
            if len(said) > len(self.text) and said.startswith(self.text):
                out.append(Delta(text=said[len(self.text) :]))
            out.append(Done(message=message))
            return out
        if sse.event == "error":
            self.finished = True
            problem = msgspec.json.decode(sse.data, type=StreamProblem)
            raise errors.TurnFailed(problem, problem.message)
        return []


def decode_feed_event(sse: ServerSentEvent) -> Event | None:
    if not sse.data:
        return None
    return msgspec.json.decode(sse.data, type=Event)


def resumable(exc: errors.ProblemError) -> bool:
    """A retried turn answers 409 reply-in-progress while its first try is still generating."""
    return exc.status == 409 and exc.slug == "reply-in-progress"


def path(*parts: object) -> str:
    return "/v1/" + "/".join(str(p) for p in parts)


Sleep = Callable[[float], Any]
