"""A message's body as stored: body_of and said_in are inverses, and large parts go out of line and back."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain import tree
from service.domain.errors import MessageTooLarge
from service.domain.events import from_columns, to_columns
from service.domain.message import BODY_FIELDS, UNSET, Body, FunctionCall, FunctionToolCall, Utterance, body_of, said, said_in
from service.domain.stored import MAX_PART_CHARS, OUT_OF_LINE_CHARS, references, restore, stored

_text = st.text(max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=5,
)
_part = st.builds(lambda t: {"type": "text", "text": t}, _text) | st.builds(
    lambda k, v: {"type": k, "v": v}, _text, _json
)
_call = st.builds(lambda i, n, a: FunctionToolCall(i, FunctionCall(n, a)), _text, _text, _text)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | strategy


@given(
    content=_maybe(st.none() | _text | st.lists(_part, max_size=3)),
    tool_calls=_maybe(st.lists(_call, min_size=1, max_size=3)),
    refusal=_maybe(st.none() | _text),
    reasoning_content=_maybe(st.none() | _text),
    reasoning=_maybe(st.dictionaries(_text, _json, max_size=2)),
)
def test_said_in_gives_back_every_field_body_of_stored(
    content: Any, tool_calls: Any, refusal: Any, reasoning_content: Any, reasoning: Any
) -> None:
    message = Utterance(
        "assistant", content, tool_calls=tool_calls, refusal=refusal, reasoning_content=reasoning_content, reasoning=reasoning
    )
    body = body_of(message)
    assert {**dict.fromkeys(BODY_FIELDS, UNSET), **said_in(body)} == {k: v for k, v in said(message).items() if k not in ("role", "metadata", "name", "tool_call_id")}
    # a string content alone is that string, as every body was before there were other fields
    assert body.json is not (isinstance(content, str) and (tool_calls, refusal, reasoning_content, reasoning) == (UNSET,) * 4)


def test_a_string_body_is_its_text_and_its_event_payload_is_unchanged() -> None:
    assert body_of(Utterance("user", "hi")) == Body("hi")
    cmd = tree.Append(role="user", content="hi", message_id=uuid.UUID(int=1), parent_id=None)
    assert to_columns(tree.appended(cmd, None, 0)).payload == '{"metadata":{}}'


def test_a_json_body_is_recorded_and_read_back_from_the_columns_and_its_text() -> None:
    cmd = tree.Append(role="assistant", content=None, message_id=uuid.UUID(int=1), parent_id=None,
                      tool_calls=[FunctionToolCall("c", FunctionCall("f", "{}"))])  # fmt: skip
    event = tree.appended(cmd, None, 0)
    columns = to_columns(event)
    assert msgspec.json.decode(columns.payload) == {"metadata": {}, "body": "json"}
    assert from_columns(columns, body_of(event).text) == event
    # without its body, a JSON message says nothing, and still records that its body is JSON
    assert to_columns(from_columns(columns)).payload == columns.payload


def _image(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"x" * size).decode()[:size]


def test_a_large_part_goes_out_of_line_and_comes_back() -> None:
    url = _image(OUT_OF_LINE_CHARS)
    small = {"type": "image_url", "image_url": {"url": _image(100), "detail": "low"}}
    remote = {"type": "image_url", "image_url": {"url": "https://x/" + "a" * OUT_OF_LINE_CHARS}}
    content = [small, {"type": "image_url", "image_url": {"url": url, "detail": "high"}}, remote]
    body = stored(Utterance("user", content))
    assert list(body.blobs.values()) == [url] and url not in body.text and remote["image_url"]["url"] in body.text
    back = said_in(Body(body.text, body.json))["content"]
    assert references(back) == list(body.blobs)
    restore(back, body.blobs)
    assert back == content


def test_a_part_over_its_limit_is_too_large() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "A" * (MAX_PART_CHARS + 1), "format": "wav"}}
    with pytest.raises(MessageTooLarge) as refused:
        stored(Utterance("user", [part]))
    assert refused.value.context == {"field": "content[0]"}


def test_a_payload_is_text_so_a_reference_is_never_what_a_client_sent() -> None:
    from service.domain.errors import InvalidMessage
    from service.domain.message import check

    part = {"type": "file", "file": {"file_id": "f", "file_data": {"blob_sha256": "00" * 32}}}
    with pytest.raises(InvalidMessage) as refused:
        check(Utterance("user", [part]))
    assert refused.value.context == {"field": "content[0].file.file_data"}
