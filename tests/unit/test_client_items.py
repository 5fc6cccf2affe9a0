"""convtree.client.items, the client's mapping of Responses items onto native messages, agrees with
the server's (service.domain.items) on agent traces: the same items are the same messages, and the
same stored messages list as the same items, with the same ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from convtree.client import Message
from convtree.client import items as client
from service.domain import items as server
from service.domain.message import UNSET, context_item, said

USER = {"role": "user", "content": "What is the weather in Oslo and Bergen?"}
STEP = [  # one model step: reasoning, text, two parallel calls
    {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "two cities"}]},
    {"type": "message", "role": "assistant", "id": "msg_x", "status": "completed",
     "content": [{"type": "output_text", "text": "Looking both up.", "annotations": [], "logprobs": []}]},
    {"type": "function_call", "id": "fc_x", "call_id": "call_oslo", "name": "weather", "arguments": '{"city":"Oslo"}'},
    {"type": "function_call", "id": "fc_y", "call_id": "call_bergen", "name": "weather", "arguments": '{"city":"Bergen"}'},
]  # fmt: skip
OUTPUTS = [
    {"type": "function_call_output", "call_id": "call_bergen", "output": "rain"},
    {"type": "function_call_output", "call_id": "call_oslo", "output": [{"type": "input_text", "text": "-3 C"}]},
]
ANSWER = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Snow and rain."}]}

TRACES = {
    "plain chat": [USER, {"role": "assistant", "content": "Cold."}, {"role": "user", "content": "Thanks"}],
    "parallel calls in one step": [USER, *STEP, *OUTPUTS, ANSWER],
    "reasoning text then a call": [
        {"role": "developer", "content": "Be brief."},
        USER,
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "call it"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sun"},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
        ANSWER,
    ],
    "two assistant messages are two steps": [USER, ANSWER, ANSWER],
    "a refusal and parts": [
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                                     {"type": "input_file", "file_id": "file_1"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    ],  # fmt: skip
    "a custom tool": [
        USER,
        {"type": "custom_tool_call", "call_id": "k1", "name": "sql", "input": "select 1"},
        {"type": "custom_tool_call_output", "call_id": "k1", "output": "1"},
    ],
}


def server_said(items: list[Any]) -> list[dict[str, Any]]:
    return [
        {k: msgspec.to_builtins(v) for k, v in said(m).items() if v is not UNSET and k != "metadata"}
        for m in server.items_to_messages(items)
    ]


def stored(said_messages: list[dict[str, Any]]) -> list[Message]:
    """The messages as the native API would serve them back (ids 1, 2, …)."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        msgspec.convert(
            {**m, "id": str(uuid.UUID(int=i + 1)), "conversation_id": str(uuid.UUID(int=999)),
             "parent_message_id": None, "metadata": {}, "depth": i, "seq": i + 1, "created_at": now.isoformat()},
            Message,
        )
        for i, m in enumerate(said_messages)
    ]  # fmt: skip


@pytest.mark.parametrize("trace", TRACES.values(), ids=list(TRACES))
def test_the_client_and_the_server_make_the_same_messages_of_items(trace: list[Any]) -> None:
    assert client.items_to_messages(trace) == server_said(trace)


@pytest.mark.parametrize("trace", TRACES.values(), ids=list(TRACES))
def test_the_client_and_the_server_list_the_same_messages_as_the_same_items(trace: list[Any]) -> None:
    messages = server.items_to_messages(trace)
    on_server = server.messages_to_items(context_item(uuid.UUID(int=i + 1), m) for i, m in enumerate(messages))
    assert client.messages_to_items(stored(client.items_to_messages(trace))) == on_server


def test_one_model_step_is_one_assistant_message_and_a_tool_output_a_tool_message() -> None:
    messages = client.items_to_messages([USER, *STEP, *OUTPUTS])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    step = messages[1]
    assert step["content"] == "Looking both up."
    assert step["reasoning"] == {"summary": [{"type": "summary_text", "text": "two cities"}]}
    assert [c["id"] for c in step["tool_calls"]] == ["call_oslo", "call_bergen"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_bergen", "content": "rain"}


def test_an_item_id_names_the_message_it_is_read_from() -> None:
    m = uuid.uuid4()
    for kind, index in (("message", 0), ("reasoning", 0), ("call", 3), ("output", 0)):
        assert client.message_of_item(client.item_id(m, kind, index)) == m
        assert client.item_id(m, kind, index) == server.item_id(m, kind, index)  # type: ignore[arg-type]
    assert client.message_of_item("resp_" + m.hex) is None
    assert client.message_of_item("fc_" + m.hex) is None  # a call's id has its index


def test_an_item_no_message_can_hold_is_refused_by_its_index() -> None:
    with pytest.raises(client.UnstorableItem, match=r"items\[1\].*'web_search_call'"):
        client.items_to_messages([USER, {"type": "web_search_call", "id": "ws_1"}])
