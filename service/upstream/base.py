"""The provider contract: chat request/stream types and the small Protocol every model client meets."""

from __future__ import annotations

import operator
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

import msgspec

from service.domain.message import Utterance

# A message of a chat request is the domain's Utterance (a ContextItem, the context a turn sends, is
# one already): each provider turns it into its own wire format, with a `message_encoder`.
ChatMessage: TypeAlias = Utterance

W = TypeVar("W", bound=msgspec.Struct)


def message_encoder(shape: type[W]) -> Callable[[Utterance], W]:
    """A provider's encoder of a message: `shape` (its wire struct, whose fields are message fields
    of the same names, positional) built from what the message says. So a message field a protocol
    names as convtree does is one line in that struct. Built positionally, not by keyword: a deep
    context sends thousands of messages, and this takes the time a dict literal did."""
    get = operator.attrgetter(*shape.__struct_fields__)
    if len(shape.__struct_fields__) == 1:
        return lambda message: shape(get(message))
    return lambda message: shape(*get(message))


class ChatParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a request asks of the model besides its messages: sampling, tools, output format;
    `None` means "the provider's default", so it is never sent. The fields OpenAI names are passed
    to an OpenAI-compatible provider as given (`tools`, `tool_choice`, `response_format` and
    `metadata` are OpenAI's JSON, never read here); another protocol maps what it has."""

    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name: sent under the name it was given
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def token_limit(self) -> int | None:
        """The most tokens the reply may take, under either name."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Utterance]
    params: ChatParams = msgspec.field(default_factory=ChatParams)


class TextDelta(msgspec.Struct, frozen=True, tag="text_delta"):
    """A piece of the reply, in order; the reply is the concatenation of all deltas."""

    text: str


class ToolCallDelta(msgspec.Struct, frozen=True):
    """A fragment of a tool call, as OpenAI streams them: fragments with the same `index` are one
    call, whose `id`, `type` and `name` come in its first fragment and whose `arguments` are the
    concatenation of every fragment's (relay.py assembles them). A provider that gives whole calls
    yields each as one fragment."""

    index: int
    id: str | None = None
    type: str | None = None  # "function"
    name: str | None = None
    arguments: str | None = None


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning_delta"):
    """A piece of the reasoning a model shows beside its reply (`reasoning_content` in vLLM's and
    DeepSeek's protocol, `thinking` in Ollama's); the reasoning is the concatenation of all."""

    text: str


class RefusalDelta(msgspec.Struct, frozen=True, tag="refusal_delta"):
    """A piece of the model's refusal (OpenAI's `refusal`), said instead of a reply."""

    text: str


Said: TypeAlias = TextDelta | ToolCallDelta | ReasoningDelta | RefusalDelta


class Finished(msgspec.Struct, frozen=True, tag="finished"):
    """The last item of every successful stream; fields are `None` when the provider did not say."""

    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


StreamItem: TypeAlias = Said | Finished


class HttpSettings(msgspec.Struct, frozen=True):
    """Timeouts (seconds) and pool limits of one provider's shared HTTP client.

    `read` is the longest gap between two chunks (and before the first byte), not the reply's
    total time; `stream_max` bounds a whole stream so a server that never stops cannot hold us.
    """

    connect: float = 5.0
    read: float = 60.0
    write: float = 10.0
    pool: float = 5.0
    # Each streaming reply holds a connection for its whole length: the pool bounds how many replies
    # one provider can stream at once (the next waits up to `pool` seconds, then fails).
    max_connections: int = 200
    max_keepalive_connections: int = 20
    stream_max: float = 600.0


class RetryPolicy(msgspec.Struct, frozen=True):
    """Retries before the first body byte only: connect failures, 429 and 502/503/504.

    `attempts` counts the first try; `timeout` bounds the time spent across all tries; a
    `Retry-After` longer than `retry_after_max` is not waited for (we fail fast instead).
    """

    attempts: int = 3
    timeout: float = 30.0
    wait_initial: float = 0.5
    wait_max: float = 5.0
    wait_jitter: float = 0.5
    retry_after_max: float = 10.0


class Provider(Protocol):
    """A model API. Implementations raise only `service.domain.errors.UpstreamError` subclasses.

    `stream` is an async generator: it yields what the model says as it comes (`TextDelta`,
    `ToolCallDelta`, `ReasoningDelta`, `RefusalDelta`, in any order) then exactly one `Finished`,
    or raises (possibly after some deltas, so the caller can keep the partial reply). Stopping
    iteration (`aclose()`, best via `contextlib.aclosing`) or cancelling the task closes the
    upstream response at once, so the model stops generating.
    """

    name: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]: ...

    async def list_models(self) -> list[str]: ...

    async def aclose(self) -> None: ...
