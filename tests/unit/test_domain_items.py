"""Responses/Conversations items and convtree's messages, both ways: given messages, the items they
list as; given items, the messages they are; and each read back through the other."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from service.domain import items
from service.domain.errors import InvalidMessage
from service.domain.items import ItemRef, items_to_messages, message_items, messages_to_items, parse_item_id
from service.domain.message import (
    UNSET,
    ContextItem,
    CustomCall,
    CustomToolCall,
    FunctionCall,
    FunctionToolCall,
    Utterance,
    context_item,
    said,
    text_of,
)

A, B, C, D = (uuid.UUID(int=n) for n in (0xA1, 0xB2, 0xC3, 0xD4))


def fn(call_id: str, name: str = "lookup", arguments: str = '{"q": 1}') -> FunctionToolCall:
    return FunctionToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def with_ids(*messages: Utterance) -> list[ContextItem]:
    ids = [A, B, C, D, *(uuid.UUID(int=n) for n in range(100, 120))]
    return [context_item(i, m) for i, m in zip(ids, messages, strict=False)]


def plain(messages: list[Utterance]) -> list[dict[str, Any]]:
    return [{k: v for k, v in said(m).items() if v is not UNSET} for m in messages]


# --- ids --------------------------------------------------------------------------------------------


def test_item_ids_are_prefixed_from_the_message_id_and_parse_back() -> None:
    assert items.item_id(A, "message") == "msg_" + A.hex
    assert items.item_id(A, "reasoning") == "rs_" + A.hex
    assert items.item_id(A, "call", 2) == f"fc_{A.hex}_2"
    assert items.item_id(A, "output") == "fco_" + A.hex
    for kind, index in (("message", 0), ("reasoning", 0), ("call", 0), ("call", 11), ("output", 0)):
        assert parse_item_id(items.item_id(B, kind, index)) == ItemRef(B, kind, index)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["", "msg_", "msg_xyz", "msg_" + "A" * 32, "fc_" + "a" * 32, f"fc_{'a' * 32}_", f"fc_{'a' * 32}_01",
     f"fc_{'a' * 32}_x", "resp_" + "a" * 32, "msg_" + "a" * 31, "msg_" + "a" * 33, "conv_" + "a" * 32],
)
def test_a_string_convtree_did_not_give_parses_as_no_item(value: str) -> None:
    assert parse_item_id(value) is None


def test_conversation_ids_are_conv_and_the_uuid_hex() -> None:
    assert items.conversation_id(A) == "conv_" + A.hex
    assert items.parse_conversation_id("conv_" + A.hex) == A
    assert items.parse_conversation_id(str(A)) is None
    assert items.parse_conversation_id("conv_nothex") is None


# --- messages to items ------------------------------------------------------------------------------


def test_a_user_message_lists_as_a_message_item_with_input_text() -> None:
    assert messages_to_items(with_ids(Utterance(role="user", content="hi"))) == [
        {"id": "msg_" + A.hex, "type": "message", "role": "user", "status": "completed",
         "content": [{"type": "input_text", "text": "hi"}]}
    ]


def test_an_assistant_step_lists_its_reasoning_text_and_calls_in_order() -> None:
    step = Utterance(
        role="assistant",
        content="Looking.",
        reasoning_content="think",
        tool_calls=[fn("call_1"), fn("call_2", "other", "{}")],
    )
    assert messages_to_items(with_ids(step)) == [
        {"id": "rs_" + A.hex, "type": "reasoning", "summary": [],
         "content": [{"type": "reasoning_text", "text": "think"}], "status": "completed"},
        {"id": "msg_" + A.hex, "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Looking.", "annotations": []}]},
        {"id": f"fc_{A.hex}_0", "type": "function_call", "call_id": "call_1", "name": "lookup",
         "arguments": '{"q": 1}', "status": "completed"},
        {"id": f"fc_{A.hex}_1", "type": "function_call", "call_id": "call_2", "name": "other",
         "arguments": "{}", "status": "completed"},
    ]


def test_a_reply_with_only_calls_has_no_message_item() -> None:
    listed = messages_to_items(with_ids(Utterance(role="assistant", content=None, tool_calls=[fn("c")])))
    assert [i["type"] for i in listed] == ["function_call"]


def test_a_tool_message_lists_as_a_function_call_output_with_the_call_id() -> None:
    path = with_ids(
        Utterance(role="assistant", content=None, tool_calls=[fn("c1")]),
        Utterance(role="tool", content="42", tool_call_id="c1"),
    )
    assert messages_to_items(path)[-1] == {
        "id": "fco_" + B.hex, "type": "function_call_output", "call_id": "c1", "output": "42", "status": "completed"
    }


def test_a_custom_call_and_its_result_list_as_custom_items() -> None:
    path = with_ids(
        Utterance(role="assistant", content=None, tool_calls=[CustomToolCall(id="k", custom=CustomCall("grep", "x"))]),
        Utterance(role="tool", content="found", tool_call_id="k"),
    )
    listed = messages_to_items(path)
    assert listed[0] == {"id": f"fc_{A.hex}_0", "type": "custom_tool_call", "call_id": "k", "name": "grep",
                         "input": "x", "status": "completed"}
    assert listed[1]["type"] == "custom_tool_call_output"
    assert items_to_messages(listed) == [said_only(p) for p in path]


def test_chat_parts_list_as_responses_parts() -> None:
    message = Utterance(
        role="user",
        content=[
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ],
    )
    assert message_items(A, message)[0]["content"] == [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
    ]


def test_a_refusal_lists_as_the_last_part_of_the_message_item() -> None:
    listed = message_items(A, Utterance(role="assistant", content=None, refusal="No."))
    assert listed == [{"id": "msg_" + A.hex, "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "refusal", "refusal": "No."}]}]


def test_opaque_reasoning_lists_as_given_under_convtree_s_id() -> None:
    message = Utterance(
        role="assistant", content="ok",
        reasoning={"id": "rs_theirs", "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "e"},
    )
    assert message_items(A, message)[0] == {
        "id": "rs_" + A.hex, "type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}],
        "encrypted_content": "e", "status": "completed",
    }


# --- items to messages ------------------------------------------------------------------------------


def said_only(message: Utterance) -> Utterance:
    return Utterance(**said(message))


def test_input_messages_in_either_form_are_stored_in_chat_form() -> None:
    given = [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "https://x/i.png", "detail": "high"},
            {"type": "input_image", "file_id": "file-1", "detail": "auto"},
            {"type": "input_file", "file_id": "file-2"},
            {"type": "input_file", "file_url": "https://x/f.pdf"},
            {"type": "mystery", "x": 1},
        ]},
    ]
    assert plain(items_to_messages(given)) == [
        {"role": "user", "content": "hi", "metadata": {}},
        {"role": "developer", "content": "be brief", "metadata": {}},
        {"role": "user", "metadata": {}, "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "high"}},
            {"type": "input_image", "file_id": "file-1", "detail": "auto"},
            {"type": "file", "file": {"file_id": "file-2"}},
            {"type": "input_file", "file_url": "https://x/f.pdf"},
            {"type": "mystery", "x": 1},
        ]},
    ]


def test_reasoning_message_and_parallel_calls_of_one_step_are_one_assistant_message() -> None:
    given = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "enc"},
        {"type": "message", "id": "msg_x", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_x", "call_id": "call_p", "name": "weather", "arguments": '{"c":"Paris"}'},
        {"type": "function_call", "call_id": "call_r", "name": "weather", "arguments": '{"c":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_p", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_r", "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sun and rain."}]},
    ]
    messages = items_to_messages(given)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    step = messages[1]
    assert step.reasoning == {"summary": [], "encrypted_content": "enc"}
    assert step.content == "Checking."
    assert step.tool_calls == [fn("call_p", "weather", '{"c":"Paris"}'), fn("call_r", "weather", '{"c":"Rome"}')]
    assert messages[2].tool_call_id == "call_p" and messages[2].content == "sunny"
    assert messages[3].content == [{"type": "text", "text": "rain"}]
    assert messages[4].content == "Sun and rain."


def test_calls_alone_are_a_message_with_null_content_as_a_model_gives_it() -> None:
    [message] = items_to_messages([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert message.content is None and message.tool_calls == [fn("c", "f", "{}")]


def test_a_message_after_calls_or_a_second_reasoning_starts_the_next_message() -> None:
    given = [
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "a"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "message", "role": "assistant", "content": "after"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": "second"},
        {"type": "message", "role": "assistant", "content": "third"},
    ]
    messages = items_to_messages(given)
    assert [(m.reasoning_content, m.content) for m in messages] == [
        ("a", None), (UNSET, "after"), ("b", "second"), (UNSET, "third")
    ]


def test_an_item_that_says_nothing_storable_is_refused_naming_it() -> None:
    with pytest.raises(InvalidMessage) as refused:
        items_to_messages([{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}])
    assert refused.value.context["field"] == "items[1].type"
    with pytest.raises(InvalidMessage) as refused:
        items_to_messages([{"type": "message", "role": "tool", "content": "x"}])
    assert refused.value.context["field"] == "items[0].role"
    with pytest.raises(InvalidMessage) as refused:
        items_to_messages([{"type": "function_call", "call_id": "c", "name": "f"}])
    assert refused.value.context["field"] == "items[0].arguments"
    with pytest.raises(InvalidMessage) as refused:
        items_to_messages([{"role": "user", "content": "ok"}, {"role": "user", "content": []}])
    assert refused.value.context["field"] == "items[1].content"


# --- round trips ------------------------------------------------------------------------------------

CHAT_PATH = [
    Utterance(role="system", content="You are terse."),
    Utterance(role="user", content=[
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "auto"}},
        {"type": "file", "file": {"file_id": "file-9", "filename": "n.txt"}},
    ]),
    Utterance(role="assistant", content=None, reasoning_content="hmm", tool_calls=[fn("c1"), fn("c2")]),
    Utterance(role="tool", content="one", tool_call_id="c1"),
    Utterance(role="tool", content=[{"type": "text", "text": "two"}], tool_call_id="c2"),
    Utterance(role="assistant", content="A cat.", refusal="Not the dog."),
    Utterance(role="user", content="thanks"),
    Utterance(role="assistant", content=None, refusal="No."),
    Utterance(role="developer", content="again"),
    Utterance(role="assistant", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
              reasoning={"summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "e"}),
]


def test_chat_messages_read_back_from_their_items_as_they_were_stored() -> None:
    assert items_to_messages(messages_to_items(with_ids(*CHAT_PATH))) == [said_only(m) for m in CHAT_PATH]


def test_items_read_back_from_their_messages_as_they_were_listed() -> None:
    listed = messages_to_items(with_ids(*CHAT_PATH))
    again = messages_to_items(with_ids(*items_to_messages(listed)))
    assert again == listed


def test_sent_items_read_back_as_sent_but_for_ids_and_status() -> None:
    sent = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                        {"type": "input_image", "file_id": "f", "detail": "low"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "cited", "annotations": [{"type": "url_citation", "url": "u"}]},
            {"type": "refusal", "refusal": "partly"},
        ]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file", "file_url": "https://f"}]},
    ]
    listed = messages_to_items(with_ids(*items_to_messages(sent)))
    assert [{k: v for k, v in i.items() if k not in ("id", "status")} for i in listed] == sent


def test_text_of_reads_responses_text_parts_kept_as_given() -> None:
    [message] = items_to_messages([{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "cited", "annotations": [{"type": "url_citation"}]}]}])
    assert text_of(message) == "cited"
