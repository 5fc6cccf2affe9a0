"""The OpenAI-compatible client's wire format: what it sends and how it reads SSE."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from service.domain.errors import UpstreamProtocolError
from service.domain.message import FunctionCall, FunctionToolCall
from service.upstream import (
    ChatMessage,
    ChatParams,
    ChatRequest,
    Finished,
    OpenAIProvider,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)
from service.upstream.openai import request_body
from tests.fakeupstream import FakeUpstream

REQUEST = ChatRequest(model="gpt-x", messages=[ChatMessage("user", "hi")])


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def run_with(body: bytes, request: ChatRequest = REQUEST) -> list[object]:
    """Stream against an httpx.MockTransport that answers every POST with `body`."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def go() -> list[object]:
        provider = OpenAIProvider("oa", "http://upstream.test/v1", transport=httpx.MockTransport(handler))
        try:
            return [item async for item in provider.stream(request)]
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def test_request_body_asks_for_streamed_usage_and_sends_only_given_params() -> None:
    request = ChatRequest(
        "gpt-x", [ChatMessage("user", "hi")], ChatParams(temperature=0.2, max_tokens=5, stop=["\n"], seed=7)
    )
    assert msgspec.json.decode(request_body(request)) == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 5,
        "stop": ["\n"],
        "seed": 7,
    }


def test_reads_id_model_finish_reason_and_usage_from_separate_chunks() -> None:
    body = sse(
        '{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        '{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
        '{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}',
        '{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
        '{"id":"c1","model":"gpt-x-2024","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
        "[DONE]",
    )
    assert run_with(body) == [
        TextDelta("Hel"),
        TextDelta("lo"),
        Finished(
            finish_reason="length", model="gpt-x-2024", response_id="c1", prompt_tokens=3, completion_tokens=2
        ),
    ]


def test_sse_comments_and_other_fields_are_ignored() -> None:
    body = b": keep-alive\n\nevent: message\nid: 1\n" + sse(
        '{"choices":[{"delta":{"content":"ok"}}]}', "[DONE]"
    )
    items = run_with(body)
    assert items == [TextDelta("ok"), Finished()]


def test_stream_without_done_marker_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="without \\[DONE\\]"):
        run_with(sse('{"choices":[{"delta":{"content":"cut"}}]}'))


def test_in_band_error_event_is_a_protocol_error_with_its_message() -> None:
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        run_with(sse('{"error":{"message":"model overloaded","type":"server_error"}}'))


def test_chunk_of_the_wrong_shape_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        run_with(sse('{"choices":"nope"}', "[DONE]"))


def test_api_key_is_sent_as_bearer_and_hidden_from_repr() -> None:
    seen: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        return httpx.Response(200, json={"object": "list", "data": [{"id": "b"}, {"id": "a"}]})

    provider = OpenAIProvider(
        "oa", "http://upstream.test/v1", api_key="sk-hidden", transport=httpx.MockTransport(handler)
    )
    assert asyncio.run(provider.list_models()) == ["a", "b"]
    assert seen == ["Bearer sk-hidden"]
    assert "sk-hidden" not in repr(provider)
    asyncio.run(provider.aclose())


def test_no_authorization_header_without_a_key() -> None:
    seen: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        return httpx.Response(200, json={"data": []})

    provider = OpenAIProvider("local", "http://upstream.test/v1", transport=httpx.MockTransport(handler))
    assert asyncio.run(provider.list_models()) == []
    assert seen == [None]


def test_fake_server_answers_non_streaming_like_openai(fake: FakeUpstream) -> None:
    response = httpx.post(
        fake.openai_url + "/chat/completions",
        json={"model": "fake-small", "messages": [{"role": "user", "content": "ping"}]},
        timeout=5,
    )
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello from fake-small. You said: ping"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}


CALLS = [FunctionToolCall("call_1", FunctionCall("weather", '{"city":"Oslo"}'))]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def test_request_body_sends_tools_and_every_message_field_a_model_api_takes_back() -> None:
    history = [
        ChatMessage("developer", "Use tools.", name="ops"),
        ChatMessage("user", [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]),
        ChatMessage("assistant", None, tool_calls=CALLS, reasoning_content="private"),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    ]
    params = ChatParams(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_completion_tokens=9)
    body = msgspec.json.decode(request_body(ChatRequest("gpt-x", history, params)))
    assert body["messages"] == [
        {"role": "developer", "content": "Use tools.", "name": "ops"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]},
        # Reasoning is not sent back (DeepSeek refuses it); a null content is sent as null.
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "id": "call_1", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
        ]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]  # fmt: skip
    assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == ([WEATHER], "required", False)
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body


def test_streamed_tool_call_fragments_reasoning_and_refusal_are_yielded_as_they_come() -> None:
    body = sse(
        '{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"hm"}}]}',
        '{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",'
        '"function":{"name":"weather","arguments":""}}]}}]}',
        '{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"ci"}}]}}]}',
        '{"id":"c1","choices":[{"index":0,"delta":{"refusal":"no"}}]}',
        '{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "[DONE]",
    )
    assert run_with(body) == [
        ReasoningDelta("hm"),
        ToolCallDelta(0, "call_1", "function", "weather", ""),
        ToolCallDelta(0, None, None, None, '{"ci'),
        RefusalDelta("no"),
        Finished(finish_reason="tool_calls", response_id="c1"),
    ]


def test_a_server_that_answers_one_json_completion_is_read_as_its_stream() -> None:
    completion = {
        "id": "c2",
        "model": "gpt-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ]}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }  # fmt: skip

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion)

    async def go() -> list[object]:
        provider = OpenAIProvider("oa", "http://upstream.test/v1", transport=httpx.MockTransport(handler))
        try:
            return [item async for item in provider.stream(REQUEST)]
        finally:
            await provider.aclose()

    assert asyncio.run(go()) == [
        ToolCallDelta(0, "call_1", "function", "weather", "{}"),
        Finished(finish_reason="tool_calls", model="gpt-x", response_id="c2", prompt_tokens=4, completion_tokens=2),
    ]
