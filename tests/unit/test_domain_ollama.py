"""Ollama's form of a message, both ways: a history sent again converts to the same messages, and
every message the door stores converts out and back to itself."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.errors import InvalidRequest
from service.domain.message import FunctionCall, FunctionToolCall, Utterance
from service.domain.ollama import (
    OllamaMessage,
    as_resent,
    call_id,
    done_reason,
    media_type,
    ollama_message,
    response_format,
    utterances,
)
from service.domain.threads import said_key

PNG = b"\x89PNG\r\n\x1a\n" + bytes(20)


def sent(*messages: dict) -> list[OllamaMessage]:
    """Messages as a client sends them, decoded as the door decodes its body."""
    return msgspec.convert(list(messages), list[OllamaMessage])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_text_messages_keep_their_string_content():
    assert utterances(sent({"role": "system", "content": "rules"}, {"role": "user", "content": "hi"})) == [
        Utterance(role="system", content="rules"),
        Utterance(role="user", content="hi"),
    ]


def test_images_become_image_url_parts_after_the_text_typed_by_their_first_bytes():
    gif, jpeg = b"GIF89a" + bytes(10), b"\xff\xd8\xff\xe0" + bytes(10)
    [said] = utterances(sent({"role": "user", "content": "look", "images": [b64(PNG), b64(gif), b64(jpeg)]}))
    assert said.content == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}},
        {"type": "image_url", "image_url": {"url": "data:image/gif;base64," + b64(gif)}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + b64(jpeg)}},
    ]
    [only] = utterances(sent({"role": "user", "images": [b64(PNG)]}))
    assert only.content == [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff\xdb", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x00\x00", "image/bmp"),
        (b"II*\x00", "image/tiff"),
        (b"MM\x00*", "image/tiff"),
        (b"XXXXXXXXWEBP", "application/octet-stream"),  # WEBP without RIFF
        (b"%PDF-1.7", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_media_type_reads_the_signature(head, kind):
    assert media_type(head + bytes(8)) == kind


@pytest.mark.parametrize("image", ["not base64!", "", "QUJD\n", "QUJ"])
def test_an_image_that_is_not_base64_is_refused_naming_it(image):
    with pytest.raises(InvalidRequest) as refused:
        utterances(sent({"role": "user", "content": "x"}, {"role": "user", "content": "", "images": [b64(PNG), image]}))
    assert refused.value.context["parameter"] == "messages[1].images[1]"


def test_thinking_is_reasoning_content_and_tool_calls_get_stable_ids():
    history = sent(
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "two cities",
            "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}},
                {"type": "function", "function": {"index": 1, "name": "weather", "arguments": {"city": "Rome"}}},
            ],
        },
        {"role": "tool", "tool_name": "weather", "content": "18"},
        {"role": "tool", "tool_name": "weather", "content": "21"},
        {"role": "user", "content": "thanks"},
    )
    said = utterances(history)
    paris = call_id(0, "weather", '{"city":"Paris","unit":"C"}')
    rome = call_id(1, "weather", '{"city":"Rome"}')
    assert said[1] == Utterance(
        role="assistant",
        content=None,
        reasoning_content="two cities",
        tool_calls=[
            FunctionToolCall(id=paris, function=FunctionCall("weather", '{"city":"Paris","unit":"C"}')),
            FunctionToolCall(id=rome, function=FunctionCall("weather", '{"city":"Rome"}')),
        ],
    )
    assert said[2] == Utterance(role="tool", content="18", name="weather", tool_call_id=paris)
    assert said[3] == Utterance(role="tool", content="21", name="weather", tool_call_id=rome)
    assert paris.startswith("call_") and len(paris) == 29 and paris != rome
    assert utterances(history) == said  # sent again: the same messages, ids included


def test_a_call_that_came_with_an_id_keeps_it_and_a_tool_message_may_name_its_call():
    said = utterances(
        sent(
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_a", "function": {"name": "f", "arguments": {}}},
                {"id": "call_b", "function": {"name": "g", "arguments": "{\"raw\": 1}"}},
            ]},  # fmt: skip
            {"role": "tool", "tool_name": "g", "content": "from g"},
            {"role": "tool", "tool_call_id": "call_a", "content": "from f"},
        )
    )
    assert [c.function.arguments for c in said[1].tool_calls] == ["{}", '{"raw": 1}']  # a string stays as sent
    assert (said[2].tool_call_id, said[3].tool_call_id) == ("call_b", "call_a")


def test_a_tool_message_with_no_call_left_to_answer_is_refused_naming_it():
    for history in (
        sent({"role": "user", "content": "go"}, {"role": "tool", "tool_name": "f", "content": "x"}),
        sent(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "tool_name": "f", "content": "x"},
            {"role": "tool", "tool_name": "f", "content": "twice"},
        ),
        sent(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "tool_name": "other", "content": "x"},
        ),
        sent(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
            {"role": "user", "content": "between"},
            {"role": "tool", "content": "x"},
        ),
    ):
        with pytest.raises(InvalidRequest) as refused:
            utterances(history)
        assert refused.value.context["parameter"] == f"messages[{len(history) - 1}].tool_name"


@pytest.mark.parametrize("role", ["robot", "developer"])  # "developer" is OpenAI's, not Ollama's
def test_a_role_ollama_does_not_have_is_refused_naming_it(role):
    with pytest.raises(InvalidRequest) as refused:
        utterances(sent({"role": "user", "content": "x"}, {"role": role, "content": "x"}))
    assert refused.value.context["parameter"] == "messages[1].role"


def test_out_a_message_says_in_ollamas_words():
    reply = Utterance(
        role="assistant",
        content=None,
        reasoning_content="hmm",
        tool_calls=[FunctionToolCall(id="call_x", function=FunctionCall("f", '{"a": [1, 2]}'))],
    )
    assert msgspec.to_builtins(ollama_message(reply)) == {
        "role": "assistant",
        "content": "",
        "thinking": "hmm",
        "tool_calls": [
            {"function": {"name": "f", "arguments": {"a": [1, 2]}, "index": 0}, "id": "call_x", "type": "function"}
        ],
    }
    bad = Utterance(
        role="assistant", content="x", tool_calls=[FunctionToolCall(id="c", function=FunctionCall("f", "{oops"))]
    )
    assert ollama_message(bad).tool_calls[0].function.arguments == "{oops"  # not an object: the text as it is
    parts = Utterance(role="user", content=[
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},  # Ollama cannot carry it
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}},
    ])  # fmt: skip
    assert msgspec.to_builtins(ollama_message(parts)) == {"role": "user", "content": "a", "images": [b64(PNG)]}


# A message the door stores, as `utterances` makes them: the ones an Ollama client is answered
# with and sends back.
_text = st.text(max_size=30)
_args = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=3)
_calls = st.lists(st.tuples(st.text(min_size=1, max_size=10), _args), min_size=1, max_size=3)
_images = st.lists(st.binary(min_size=1, max_size=20).map(lambda b: b64(PNG + b)), min_size=1, max_size=2)


@st.composite
def _history(draw: st.DrawFn) -> list[dict]:
    out: list[dict] = [{"role": "system", "content": draw(_text)}]
    for _ in range(draw(st.integers(1, 4))):
        user: dict = {"role": "user", "content": draw(_text)}
        if draw(st.booleans()):
            user["images"] = draw(_images)
        out.append(user)
        calls = draw(st.one_of(st.none(), _calls))
        assistant: dict = {"role": "assistant", "content": "" if calls else draw(_text)}
        if draw(st.booleans()):
            assistant["thinking"] = draw(st.text(min_size=1, max_size=20))
        if calls:
            assistant["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in calls]
        out.append(assistant)
        for name, _ in calls or []:
            out.append({"role": "tool", "tool_name": name, "content": draw(_text)})
    return out


@given(_history())
def test_a_history_converts_the_same_every_time_and_its_messages_go_out_and_back_unchanged(history):
    stored = utterances(sent(*history))
    assert utterances(sent(*history)) == stored
    answered = [msgspec.to_builtins(ollama_message(m)) for m in stored]
    # As Ollama's client sends them back: without the ids and indexes it does not keep.
    for message in answered:
        for call in message.get("tool_calls", []):
            del call["id"], call["type"], call["function"]["index"]
        message.pop("tool_call_id", None)
    assert utterances(sent(*answered)) == stored


def test_a_reply_is_stored_as_an_ollama_client_sends_it_back():
    # As an OpenAI-protocol model gives it: its own ids, arguments as it wrote them.
    reply = Utterance(
        role="assistant",
        content=None,
        reasoning_content="looking",
        tool_calls=[
            FunctionToolCall(id="call_upstream_0", function=FunctionCall("weather", '{"city": "Oslo", "days": 2}')),
            FunctionToolCall(id="call_upstream_1", function=FunctionCall("time", "")),
            FunctionToolCall(id="call_upstream_2", function=FunctionCall("raw", "[1, 2]")),
        ],
    )
    stored = as_resent(reply)
    compact = '{"city":"Oslo","days":2}'
    assert stored.tool_calls == [
        FunctionToolCall(id=call_id(0, "weather", compact), function=FunctionCall("weather", compact)),
        FunctionToolCall(id=call_id(1, "time", "{}"), function=FunctionCall("time", "{}")),  # none: an empty object
        FunctionToolCall(id=call_id(2, "raw", "[1, 2]"), function=FunctionCall("raw", "[1, 2]")),  # not an object
    ]
    assert (stored.content, stored.reasoning_content) == (None, "looking")
    assert as_resent(stored) == stored
    text = Utterance(role="assistant", content="no calls")
    assert as_resent(text) is text


_raw_args = st.one_of(
    _args.map(lambda a: msgspec.json.encode(a).decode()),
    _args.map(lambda a: json.dumps(a, indent=1, ensure_ascii=True)),  # spaced and escaped, as models write it
    st.just(""),
)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=10), _raw_args), min_size=1, max_size=3), st.text(max_size=10))
def test_a_stored_reply_sent_out_and_back_by_an_ollama_client_says_the_same(calls, text):
    reply = Utterance(
        role="assistant",
        content=text or None,
        tool_calls=[FunctionToolCall(id=f"up_{i}", function=FunctionCall(n, a)) for i, (n, a) in enumerate(calls)],
    )
    stored = as_resent(reply)
    out = msgspec.to_builtins(ollama_message(stored))
    for call in out["tool_calls"]:  # Ollama's client keeps neither the id nor the index
        del call["id"], call["type"], call["function"]["index"]
    # The client's JSON: its own spacing and escapes, its keys in the order it was sent them.
    resent = msgspec.convert(json.loads(json.dumps(out)), OllamaMessage)
    [back] = utterances([OllamaMessage(role="user", content="q"), resent])[1:]
    assert said_key(back) == said_key(stored)


def test_format_is_openais_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert response_format(None) is None and response_format("") is None
    assert response_format("json") == {"type": "json_object"}
    assert response_format(schema) == {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}
    with pytest.raises(InvalidRequest) as refused:
        response_format("yaml")
    assert refused.value.context["parameter"] == "format"


@pytest.mark.parametrize(
    ("finish_reason", "said"),
    [(None, "stop"), ("stop", "stop"), ("tool_calls", "stop"), ("function_call", "stop"), ("length", "length")],
)
def test_done_reason_is_ollamas(finish_reason, said):
    assert done_reason(finish_reason) == said
