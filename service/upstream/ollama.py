"""Ollama's native `/api/chat`, streamed as NDJSON, and `/api/tags` for the installed models.

Ollama's messages differ from OpenAI's in three places, mapped both ways here:
- tool calls are `{"function": {"name", "arguments": <object>}}`: arguments are a JSON object, not
  its text. Sent, a call's arguments are parsed (text that does not parse is sent as the string
  it is, for Ollama to refuse); received, they are written as compact JSON text. A call Ollama gives without an id gets one, `call_` and 24 random
  hex digits, so a tool result can name it;
- a tool result names its function (`tool_name`), not the call's id: the name is taken from the
  call the context asked for with that id;
- content is a string, with images beside it (`images`, base64): text parts are joined by newlines,
  `data:` image parts become images, and other parts (http(s) images, audio, files) are not sent.
Role `developer` is sent as `system`, which Ollama knows. Ollama ends a reply that asks for tools
with done_reason "stop": convtree records it as "tool_calls", as OpenAI (and Ollama's own
OpenAI-compatible endpoint) say it. `reasoning_effort` is Ollama's `think`; `response_format` its
`format` (a JSON schema, or "json"); `tool_choice`, `parallel_tool_calls`, `logprobs` and
`metadata` have no Ollama counterpart and are not sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from service.domain.errors import UpstreamProtocolError
from service.domain.message import UNSET, FunctionToolCall, Utterance, text_of
from service.upstream import httpclient
from service.upstream.base import (
    ChatParams,
    ChatRequest,
    Finished,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCallDelta,
)


class _Options(msgspec.Struct, omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None
    stop: list[str] | None = None
    seed: int | None = None


class _Function(msgspec.Struct):
    name: str
    arguments: Any  # an object: Ollama's arguments are JSON, not JSON text


class _Call(msgspec.Struct, omit_defaults=True):
    function: _Function
    id: str | None = None


class _Sent(msgspec.Struct, omit_defaults=True):
    role: str
    content: str
    images: list[str] | None = None
    tool_calls: list[_Call] | None = None
    tool_name: str | None = None


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[_Sent]
    stream: bool  # no default: omit_defaults would drop it
    options: _Options | None = None
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None


class _Message(msgspec.Struct):
    content: str = ""
    thinking: str | None = None
    tool_calls: list[_Call] | None = None


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
_arguments_encoder = msgspec.json.Encoder()


def _arguments(text: str) -> Any:
    """A call's arguments as Ollama takes them: the JSON the model wrote, parsed; as given if it
    does not parse (Ollama then says what is wrong with it)."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _images(message: Utterance) -> list[str] | None:
    """The base64 data of the message's `data:` image parts."""
    if not isinstance(message.content, list):
        return None
    found = []
    for part in message.content:
        image = part.get("image_url") if part.get("type") == "image_url" else None
        url = image.get("url") if isinstance(image, dict) else None
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            found.append(url.partition(",")[2])
    return found or None


def _sent(message: Utterance, names: dict[str, str]) -> _Sent:
    calls = None
    if message.tool_calls is not UNSET:
        calls = [
            _Call(_Function(c.function.name, _arguments(c.function.arguments)), c.id)
            for c in message.tool_calls
            if isinstance(c, FunctionToolCall)
        ] or None
    return _Sent(
        role="system" if message.role == "developer" else message.role,
        content=text_of(message),
        images=_images(message),
        tool_calls=calls,
        tool_name=None if message.tool_call_id is UNSET else names.get(message.tool_call_id),
    )


def _format(p: ChatParams) -> str | dict[str, Any] | None:
    f = p.response_format
    if f is None:
        return None
    if f.get("type") == "json_object":
        return "json"
    schema = f.get("json_schema")
    if f.get("type") == "json_schema" and isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
        return dict(schema["schema"])
    return None


def request_body(request: ChatRequest) -> bytes:
    """The JSON we POST to `/api/chat`; our params map onto Ollama's `options` (and the rest, as the
    module's docstring says)."""
    p = request.params
    options = _Options(
        temperature=p.temperature, top_p=p.top_p, num_predict=p.token_limit, stop=p.stop, seed=p.seed
    )
    names = {
        c.id: c.function.name
        for m in request.messages
        if m.tool_calls is not UNSET
        for c in m.tool_calls
        if isinstance(c, FunctionToolCall)
    }
    body = _Body(
        model=request.model,
        stream=True,
        messages=[_sent(m, names) for m in request.messages],
        options=options if options != _Options() else None,
        tools=p.tools,
        format=_format(p),
        # Ollama's `think`: true, or a level for the models that take one; "medium" is what `true`
        # asks of every thinking model (gpt-oss's default level), so it is sent as `true`.
        think=True if p.reasoning_effort == "medium" else p.reasoning_effort,
    )
    return msgspec.json.encode(body)


_JSON = {"Content-Type": "application/json"}


def call_id() -> str:
    """An id for a call Ollama gave without one."""
    return "call_" + uuid.uuid4().hex[:24]


class OllamaProvider(httpclient.HttpProvider):
    """A client for an Ollama server; base_url is the server root (e.g. http://127.0.0.1:11434).
    Ollama itself has no auth: an `api_key` is for a reverse proxy in front of it."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        last: _Line | None = None
        calls = 0
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
                message = item.message
                if message is not None:
                    if message.thinking:
                        yield ReasoningDelta(message.thinking)
                    if message.content:
                        yield TextDelta(message.content)
                    for call in message.tool_calls or ():  # whole calls, each one fragment
                        arguments = call.function.arguments
                        text = arguments if isinstance(arguments, str) else _arguments_encoder.encode(arguments).decode()
                        yield ToolCallDelta(calls, call.id or call_id(), "function", call.function.name, text)
                        calls += 1
                if item.done:
                    last = item
                    break
            if last is not None:
                await reply.finish()
        if last is None:
            raise UpstreamProtocolError(f"{self.name} ended the stream before done=true", provider=self.name)
        finish_reason = last.done_reason
        if calls and finish_reason in (None, "stop"):
            finish_reason = "tool_calls"
        yield Finished(
            finish_reason=finish_reason,
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
