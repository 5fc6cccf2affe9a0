"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, LiteLLM, …) streamed over SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator

import msgspec

from service.domain.errors import UpstreamProtocolError
from service.domain.message import UNSET, Content, FunctionToolCall, ToolCall, UnsetType
from service.upstream import httpclient
from service.upstream.base import (
    ChatParams,
    ChatRequest,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Said,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    message_encoder,
)


class _Sent(msgspec.Struct, omit_defaults=True):
    """A message as the protocol takes it (message_encoder): a message field the protocol names as
    convtree does is one line here, with its default (an unset field is not sent). Reasoning is not
    sent back: servers that return `reasoning_content` refuse it in a request (DeepSeek: 400)."""

    role: str
    content: Content | UnsetType = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET


_sent = message_encoder(_Sent)


class _Body(ChatParams, frozen=True, kw_only=True):
    """The request: model, messages and what streaming asks, and every param under the name the
    caller gave it (ChatParams: `max_tokens` is the one every compatible server accepts,
    `max_completion_tokens` the one OpenAI's reasoning models require); a None param is not sent."""

    model: str
    messages: list[_Sent]
    stream: bool  # no default: omit_defaults would drop it
    # Without it the stream carries no token counts; compatible servers that do not know the
    # option ignore it.
    stream_options: dict[str, bool] | None = None


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Message(msgspec.Struct):
    """A whole reply's message (a server that answers a streamed request with one JSON object)."""

    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class _WholeChoice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ErrorDetail(msgspec.Struct):
    message: str | None = None


class _Chunk(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


class _Completion(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_WholeChoice] = []
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_Model]


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_completion_decoder = msgspec.json.Decoder(_Completion)
_models_decoder = msgspec.json.Decoder(_ModelList)


def request_body(request: ChatRequest) -> bytes:
    """The JSON we POST to `/chat/completions` (public so tests can pin the wire format)."""
    body = _Body(
        model=request.model,
        stream=True,
        messages=[_sent(m) for m in request.messages],
        stream_options={"include_usage": True},
        **msgspec.structs.asdict(request.params),
    )
    return msgspec.json.encode(body)


def said_in(delta: _Delta) -> Iterator[Said]:
    """What one streamed delta says, in the order a reader shows it: reasoning, text, refusal, calls."""
    if delta.reasoning_content:
        yield ReasoningDelta(delta.reasoning_content)
    if delta.content:
        yield TextDelta(delta.content)
    if delta.refusal:
        yield RefusalDelta(delta.refusal)
    for call in delta.tool_calls or ():
        function = call.function or _FunctionDelta()
        yield ToolCallDelta(call.index, call.id, call.type, function.name, function.arguments)


def _whole(message: _Message) -> Iterator[Said]:
    """A whole message, said as the deltas a stream of it would carry (each call in one fragment)."""
    if message.reasoning_content:
        yield ReasoningDelta(message.reasoning_content)
    if message.content:
        yield TextDelta(message.content)
    if message.refusal:
        yield RefusalDelta(message.refusal)
    for index, call in enumerate(message.tool_calls or ()):
        # A custom call has no streamed form in Chat Completions: only function calls are relayed.
        if isinstance(call, FunctionToolCall):
            yield ToolCallDelta(index, call.id, "function", call.function.name, call.function.arguments)


_SSE = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class OpenAIProvider(httpclient.HttpProvider):
    """A client for `{base_url}/chat/completions` and `{base_url}/models`; base_url ends in `/v1`."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        response_id = model = finish_reason = None
        usage: _Usage | None = None
        done = False
        async with self.streaming("chat/completions", request_body(request), _SSE) as reply:
            if reply.content_type.startswith("application/json"):
                # A server that does not stream (some do not, with tools) answers one completion.
                whole = _completion_decoder.decode(b"\n".join([line async for line in reply]))
                if whole.error is not None:
                    raise UpstreamProtocolError(
                        f"{self.name} failed: " + httpclient.scrub(whole.error.message or "unknown error", self._secret),
                        provider=self.name,
                    )
                for only in whole.choices[:1]:
                    if only.message is not None:
                        for item in _whole(only.message):
                            yield item
                    finish_reason = only.finish_reason
                usage = whole.usage
                response_id, model, done = whole.id, whole.model, True
            async for line in reply:
                # SSE: only `data:` fields matter; comments (`:`), `event:`, `id:` and blank
                # separators are skipped. OpenAI sends one JSON object per event.
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                chunk = _chunk_decoder.decode(data)
                if chunk.error is not None:
                    raise UpstreamProtocolError(
                        f"{self.name} failed mid-reply: "
                        + httpclient.scrub(chunk.error.message or "unknown error", self._secret),
                        provider=self.name,
                    )
                response_id = chunk.id or response_id
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    if choice.delta is not None:
                        for item in said_in(choice.delta):
                            yield item
            if done:
                await reply.finish()
        if not done:
            raise UpstreamProtocolError(f"{self.name} ended the stream without [DONE]", provider=self.name)
        yield Finished(
            finish_reason=finish_reason,
            model=model,
            response_id=response_id,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    async def list_models(self) -> list[str]:
        body = await httpclient.get_json(
            self._client, "models", provider=self.name, policy=self._retry, secret=self._secret
        )
        with httpclient.stream_errors(self.name):
            return sorted(m.id for m in _models_decoder.decode(body).data)
