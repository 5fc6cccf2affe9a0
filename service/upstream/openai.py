"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, LiteLLM, …) streamed over SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec

from service.domain.errors import UpstreamProtocolError
from service.upstream import httpclient
from service.upstream.base import ChatRequest, Finished, StreamItem, TextDelta, message_encoder


class _Sent(msgspec.Struct, omit_defaults=True):
    """A message as the protocol takes it (message_encoder): a message field the protocol names as
    convtree does is one line here, with its default (an unset field is not sent)."""

    role: str
    content: str


_sent = message_encoder(_Sent)


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[_Sent]
    stream: bool  # no default: omit_defaults would drop it
    # Without it the stream carries no token counts; compatible servers that do not know the
    # option ignore it.
    stream_options: dict[str, bool] | None = None
    temperature: float | None = None
    # `max_tokens` rather than `max_completion_tokens`: every compatible server accepts it.
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
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


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_Model]


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_models_decoder = msgspec.json.Decoder(_ModelList)


def request_body(request: ChatRequest) -> bytes:
    """The JSON we POST to `/chat/completions` (public so tests can pin the wire format)."""
    p = request.params
    body = _Body(
        model=request.model,
        stream=True,
        messages=[_sent(m) for m in request.messages],
        stream_options={"include_usage": True},
        temperature=p.temperature,
        max_tokens=p.max_tokens,
        top_p=p.top_p,
        stop=p.stop,
        seed=p.seed,
    )
    return msgspec.json.encode(body)


_SSE = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class OpenAIProvider(httpclient.HttpProvider):
    """A client for `{base_url}/chat/completions` and `{base_url}/models`; base_url ends in `/v1`."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        response_id = model = finish_reason = None
        usage: _Usage | None = None
        done = False
        async with self.streaming("chat/completions", request_body(request), _SSE) as reply:
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
                    if choice.delta is not None and choice.delta.content:
                        yield TextDelta(choice.delta.content)
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
