"""Turn rules as pure decisions: given a conversation's state, when a turn's messages, reply or
failure are decided, then these events; and the new events' encoding round-trips."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from service.domain.errors import ParentNotFound, ParentStillGenerating
from service.domain.events import (
    Generation,
    Interruption,
    MessageAppended,
    TurnFailed,
    body_digest,
    from_columns,
    to_columns,
)
from service.domain.message import FunctionCall, FunctionToolCall, Utterance, body_of
from service.domain.tree import Append, ConversationState, Node, fold, seen
from service.domain.turns import check_parent_settled, decide_chain, decide_failure, decide_reply

CID, FAMILY = uuid.uuid4(), uuid.uuid4()
GENERATION = Generation(
    provider="fake",
    model="fake-large-2024",
    requested_model="fake-large",
    finish_reason="stop",
    prompt_tokens=12,
    completion_tokens=5,
    latency_ms=84.5,
    first_token_ms=12.25,
    response_id="chatcmpl-1",
    context_ids=[uuid.uuid4(), uuid.uuid4()],
    params={"temperature": 0.2},
)


def state(head: uuid.UUID | None, messages: int = 0, leaves: int = 0) -> ConversationState:
    return ConversationState(
        conversation_id=CID,
        family_id=FAMILY,
        head_id=head,
        message_count=messages,
        leaf_count=leaves,
        last_seq=7,
        last_hash=bytes(32),
    )


def node(message_id: uuid.UUID, depth: int, role: str = "user", has_children: bool = False) -> Node:
    return Node(
        message_id=message_id,
        conversation_id=CID,
        parent_id=None if depth == 0 else uuid.uuid4(),
        role=role,
        depth=depth,
        body_sha256=body_digest("x"),
        metadata={},
        has_children=has_children,
    )


def test_a_chain_hangs_each_message_under_the_previous_and_moves_the_head_to_the_last():
    head = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(3)]
    messages = [
        Append(message_id=ids[0], parent_id=None, role="system", content="rules", metadata={}),
        Append(message_id=ids[1], parent_id=ids[0], role="user", content="hi", metadata={}),
        Append(message_id=ids[2], parent_id=ids[1], role="user", content="again", metadata={}),
    ]
    given = seen(state(head, 4, 1), node(head, 3))
    appended = decide_chain(given, node(head, 3), messages)
    assert [(e.message_id, e.parent_id, e.depth, e.content) for e in appended] == [
        (ids[0], head, 4, "rules"),
        (ids[1], ids[0], 5, "hi"),
        (ids[2], ids[1], 6, "again"),
    ]
    after = fold(given, appended)
    assert (after.head_id, after.message_count, after.leaf_count) == (ids[2], 7, 1)


def test_a_chain_in_an_empty_conversation_starts_at_the_root():
    first = uuid.uuid4()
    [event] = decide_chain(
        state(None), None, [Append(message_id=first, parent_id=None, role="user", content="hi", metadata={})]
    )
    assert (event.parent_id, event.depth) == (None, 0)


def test_the_reply_is_a_child_of_its_user_message_with_its_generation_and_takes_the_head():
    user, reply = uuid.uuid4(), uuid.uuid4()
    given = seen(state(uuid.uuid4(), 5, 1), node(user, 4))
    events = decide_reply(given, node(user, 4), user, reply, Utterance("assistant", "four"), GENERATION, None)
    [event] = events
    assert isinstance(event, MessageAppended)
    assert (event.message_id, event.parent_id, event.role, event.depth) == (reply, user, "assistant", 5)
    assert event.body_sha256 == body_digest("four") and event.generation == GENERATION
    after = fold(given, events)
    assert (after.head_id, after.message_count, after.leaf_count) == (reply, 6, 1)


def test_a_reply_that_asks_for_tools_keeps_its_calls_reasoning_and_null_content_as_the_model_gave_them():
    user = uuid.uuid4()
    given = seen(state(uuid.uuid4(), 6, 1), node(user, 4))
    calls = [
        FunctionToolCall("call_a", FunctionCall("weather", '{"city": "Oslo"}')),
        FunctionToolCall("call_b", FunctionCall("time", "{not json")),
    ]
    said = Utterance("assistant", None, tool_calls=calls, reasoning_content="think first")
    [event] = decide_reply(given, node(user, 4), user, uuid.uuid4(), said, GENERATION, None)
    assert isinstance(event, MessageAppended)
    assert (event.content, event.tool_calls, event.reasoning_content) == (None, calls, "think first")
    assert event.refusal is msgspec.UNSET and event.tool_call_id is msgspec.UNSET
    assert event.body_sha256 == body_digest(body_of(said).text)


def test_a_regenerated_reply_beside_another_adds_a_branch_tip():
    user = uuid.uuid4()
    given = seen(state(uuid.uuid4(), 6, 1), node(user, 4, has_children=True))
    events = decide_reply(given, node(user, 4, has_children=True), user, uuid.uuid4(), Utterance("assistant", ""), GENERATION, None)
    assert fold(given, events).leaf_count == 2


def test_a_reply_whose_user_message_is_not_there_is_refused():
    user = uuid.uuid4()
    with pytest.raises(ParentNotFound):
        decide_reply(state(uuid.uuid4()), None, user, uuid.uuid4(), Utterance("assistant", "text"), GENERATION, None)


def test_a_failed_turn_records_only_the_failure():
    failure = TurnFailed(
        reply_id=uuid.uuid4(),
        user_message_id=uuid.uuid4(),
        provider="fake",
        model="m",
        error="upstream_timeout",
        detail="slow",
    )
    before = state(uuid.uuid4(), 3, 1)
    events = decide_failure(before, failure)
    assert events == [failure] and fold(before, events) == before


def test_a_turn_under_a_pending_reply_or_under_a_head_awaiting_its_reply_is_refused():
    reply, user = uuid.uuid4(), uuid.uuid4()
    pending = [(reply, user)]
    with pytest.raises(ParentStillGenerating):
        check_parent_settled(reply, True, pending)
    with pytest.raises(ParentStillGenerating):
        check_parent_settled(user, False, pending)  # the head
    check_parent_settled(user, True, pending)  # named on purpose: a branch beside the pending reply
    check_parent_settled(uuid.uuid4(), False, [])


def test_a_generated_message_and_a_failed_turn_round_trip_through_their_columns():
    interrupted = msgspec.structs.replace(
        GENERATION, finish_reason="interrupted", interruption=Interruption(kind="client_disconnected", detail="gone")
    )
    message = MessageAppended(
        message_id=uuid.uuid4(),
        parent_id=uuid.uuid4(),
        role="assistant",
        content="partial",
        depth=3,
        body_sha256=body_digest("partial"),
        generation=interrupted,
    )
    assert from_columns(to_columns(message), "partial") == message  # the text is the body's, not the row's
    failure = TurnFailed(
        reply_id=uuid.uuid4(), user_message_id=uuid.uuid4(), provider="p", model="m", error="e", detail="d"
    )
    columns = to_columns(failure)
    assert (columns.type, columns.message_id, columns.depth) == ("turn_failed", None, None)
    assert from_columns(columns) == failure


def test_a_message_without_a_generation_keeps_its_payload_as_it_always_was():
    plain = MessageAppended(
        message_id=uuid.uuid4(), parent_id=None, role="user", content="hi", depth=0, body_sha256=body_digest("hi"), metadata={"k": 1}
    )
    assert to_columns(plain).payload == '{"metadata":{"k":1}}'  # so existing events' hashes stand
