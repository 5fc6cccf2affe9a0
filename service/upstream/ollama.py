"""Ollama's native `/api/chat`, streamed as NDJSON, and `/api/tags` for the installed models."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec

from service.domain.errors import UpstreamProtocolError
from service.upstream import httpclient
from service.upstream.base import ChatRequest, Finished, StreamItem, TextDelta, message_encoder


class _Options(msgspec.Struct, omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None
    stop: list[str] | None = None
    seed: int | None = None


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
    options: _Options | None = None


class _Message(msgspec.Struct):
    content: str = ""


class _Line(msgspec.Struct):
    model: str | None = None
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


class _Tag(msgspec.Struct):
    name: str


class _Tags(msgspec.Struct):
    models: list[_Tag]


_line_decoder = msgspec.json.Decoder(_Line)
_tags_decoder = msgspec.json.Decoder(_Tags)


def request_body(request: ChatRequest) -> bytes:
    """The JSON we POST to `/api/chat`; our params map onto Ollama's `options`."""
    p = request.params
    options = _Options(
        temperature=p.temperature, top_p=p.top_p, num_predict=p.max_tokens, stop=p.stop, seed=p.seed
    )
    body = _Body(
        model=request.model,
        stream=True,
        messages=[_sent(m) for m in request.messages],
        options=options if options != _Options() else None,
    )
    return msgspec.json.encode(body)


_JSON = {"Content-Type": "application/json"}


class OllamaProvider(httpclient.HttpProvider):
    """A client for an Ollama server; base_url is the server root (e.g. http://127.0.0.1:11434).
    Ollama itself has no auth: an `api_key` is for a reverse proxy in front of it."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        last: _Line | None = None
        async with self.streaming("api/chat", request_body(request), _JSON) as reply:
            async for line in reply:
                if not line.strip():
                    continue
                item = _line_decoder.decode(line)
                if item.error is not None:
                    raise UpstreamProtocolError(
                        f"{self.name} failed mid-reply: {httpclient.scrub(item.error, self._secret)}",
                        provider=self.name,
                    )
                if item.message is not None and item.message.content:
                    yield TextDelta(item.message.content)
                if item.done:
                    last = item
                    break
            if last is not None:
                await reply.finish()
        if last is None:
            raise UpstreamProtocolError(f"{self.name} ended the stream before done=true", provider=self.name)
        yield Finished(
            finish_reason=last.done_reason,
            model=last.model,
            response_id=None,  # Ollama has no response id
            prompt_tokens=last.prompt_eval_count,
            completion_tokens=last.eval_count,
        )

    async def list_models(self) -> list[str]:
        body = await httpclient.get_json(
            self._client, "api/tags", provider=self.name, policy=self._retry, secret=self._secret
        )
        with httpclient.stream_errors(self.name):
            return sorted(t.name for t in _tags_decoder.decode(body).models)
