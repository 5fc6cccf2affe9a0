"""The Ollama client's wire format: options mapping and NDJSON parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from service.domain.errors import UpstreamProtocolError, UpstreamRejected
from service.domain.message import FunctionCall, FunctionToolCall
from service.upstream import (
    ChatMessage,
    ChatParams,
    ChatRequest,
    Finished,
    OllamaProvider,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from service.upstream.ollama import request_body
from tests.fakeupstream import FakeUpstream

REQUEST = ChatRequest(model="llama3.2", messages=[ChatMessage("user", "hi")])


def run_with(body: bytes, status: int = 200) -> list[object]:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "application/x-ndjson"})

    async def go() -> list[object]:
        provider = OllamaProvider("ol", "http://ollama.test", transport=httpx.MockTransport(handler))
        try:
            return [item async for item in provider.stream(REQUEST)]
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def test_params_map_onto_ollama_options() -> None:
    request = ChatRequest(
        "llama3.2",
        [ChatMessage("user", "hi")],
        ChatParams(temperature=0.1, max_tokens=9, top_p=0.5, stop=["END"], seed=3),
    )
    assert msgspec.json.decode(request_body(request)) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 9, "stop": ["END"], "seed": 3},
    }


def test_no_options_object_when_no_params_are_given() -> None:
    assert "options" not in msgspec.json.decode(request_body(REQUEST))


def test_reads_done_reason_and_eval_counts_from_the_final_line() -> None:
    body = (
        b'{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":false}\n'
        b'{"model":"llama3.2","message":{"role":"assistant","content":" there"},"done":false}\n'
        b"\n"
        b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"length",'
        b'"prompt_eval_count":11,"eval_count":2,"total_duration":5}\n'
    )
    assert run_with(body) == [
        TextDelta("Hi"),
        TextDelta(" there"),
        Finished(
            finish_reason="length", model="llama3.2", response_id=None, prompt_tokens=11, completion_tokens=2
        ),
    ]


def test_stream_ending_before_done_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="before done=true"):
        run_with(b'{"model":"m","message":{"content":"half"},"done":false}\n')


def test_in_band_error_line_is_a_protocol_error_with_its_message() -> None:
    with pytest.raises(UpstreamProtocolError, match="out of memory"):
        run_with(b'{"error":"out of memory"}\n')


def test_unknown_model_404_is_rejected_with_ollamas_message() -> None:
    with pytest.raises(UpstreamRejected, match="model 'nope' not found"):
        run_with(b'{"error":"model \'nope\' not found"}', status=404)


def test_fake_server_answers_non_streaming_like_ollama(fake: FakeUpstream) -> None:
    response = httpx.post(
        fake.ollama_url + "/api/chat",
        json={"model": "fake-small", "messages": [{"role": "user", "content": "ping"}], "stream": False},
        timeout=5,
    )
    body = response.json()
    assert body["done"] is True
    assert body["message"]["content"] == "Hello from fake-small. You said: ping"
    assert (body["prompt_eval_count"], body["eval_count"]) == (1, 6)


def test_calls_and_results_are_sent_in_ollamas_form() -> None:
    calls = [FunctionToolCall("call_1", FunctionCall("weather", '{"city":"Oslo"}'))]
    history = [
        ChatMessage("developer", "Use tools."),
        ChatMessage("user", [{"type": "text", "text": "what is this?"},
                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                             {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]),
        ChatMessage("assistant", None, tool_calls=calls),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    ]  # fmt: skip
    tools = [{"type": "function", "function": {"name": "weather"}}]
    params = ChatParams(tools=tools, response_format={"type": "json_object"}, max_completion_tokens=5)
    body = msgspec.json.decode(request_body(ChatRequest("llama3.2", history, params)))
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "what is this?", "images": ["AAAA"]},  # http images are not sent
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Oslo"}}, "id": "call_1"}
        ]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]  # fmt: skip
    assert (body["tools"], body["format"], body["options"]) == (tools, "json", {"num_predict": 5})


def test_calls_ollama_gives_whole_get_ids_and_json_text_arguments_and_end_as_tool_calls() -> None:
    body = (
        b'{"model":"llama3.2","message":{"role":"assistant","content":"","thinking":"hm","tool_calls":['
        b'{"function":{"name":"weather","arguments":{"city":"Oslo"}}},'
        b'{"function":{"name":"time","arguments":{}},"id":"given"}]},"done":false}\n'
        b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
        b'"prompt_eval_count":3,"eval_count":4}\n'
    )
    items = run_with(body)
    assert items[0] == ReasoningDelta("hm")
    made = items[1]
    assert isinstance(made, ToolCallDelta) and made.id is not None and made.id.startswith("call_")
    assert items[1:3] == [
        ToolCallDelta(0, made.id, "function", "weather", '{"city":"Oslo"}'),
        ToolCallDelta(1, "given", "function", "time", "{}"),
    ]
    assert items[3] == Finished(finish_reason="tool_calls", model="llama3.2", prompt_tokens=3, completion_tokens=4)
