"""The Ollama client's wire format: options mapping and NDJSON parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from service.domain.errors import UpstreamProtocolError, UpstreamRejected
from service.upstream import ChatMessage, ChatParams, ChatRequest, Finished, OllamaProvider, TextDelta
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
