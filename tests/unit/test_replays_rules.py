"""Replay runs' pure rules: `replay_of` leaves every other event's bytes alone, which turns a path
replays and where they may go, and the tool rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from service.app.replay_runs import tools
from service.app.turn import Params
from service.app.replay_runs.plan import TurnRef, choose_turns, new_ids
from service.domain import views
from service.domain.errors import InvalidRequest
from service.domain.message import FunctionCall, FunctionToolCall, Utterance
from service.domain.events import (
    Envelope,
    Generation,
    MessageAppended,
    chain_hash,
    from_columns,
    to_columns,
)

ORIGINAL = uuid.UUID(int=7)


def reply(generation: Generation) -> MessageAppended:
    return MessageAppended(
        message_id=uuid.UUID(int=1), parent_id=uuid.UUID(int=2), role="assistant", content="", depth=1,
        body_sha256=bytes(32), generation=generation,
    )  # fmt: skip


GENERATION = Generation(provider="p", model="m", requested_model="m", finish_reason="stop", latency_ms=1.5)
# A reply's payload as convtree wrote it before replay runs existed.
BEFORE = (
    '{"metadata":{},"generation":{"provider":"p","model":"m","requested_model":"m","finish_reason":"stop",'
    '"prompt_tokens":null,"completion_tokens":null,"latency_ms":1.5,"first_token_ms":null,"response_id":null,'
    '"context_ids":[],"params":{},"interruption":null}}'
)
ENVELOPE = Envelope(
    seq=1, tenant="t", conversation_id=uuid.UUID(int=3), family_id=uuid.UUID(int=4), actor="a", request_id=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)  # fmt: skip


def test_a_reply_that_is_no_replay_encodes_and_hashes_exactly_as_before_the_field_existed():
    columns = to_columns(reply(GENERATION))
    assert columns.payload == BEFORE
    before = msgspec.structs.replace(columns, payload=BEFORE)
    assert chain_hash(bytes(32), ENVELOPE, columns) == chain_hash(bytes(32), ENVELOPE, before)
    decoded = from_columns(columns)
    assert isinstance(decoded, MessageAppended) and decoded.generation is not None
    assert decoded.generation.replay_of is msgspec.UNSET


def test_a_replayed_reply_records_the_reply_it_replaces_and_reads_back():
    replayed = msgspec.structs.replace(GENERATION, replay_of=ORIGINAL)
    columns = to_columns(reply(replayed))
    assert columns.payload == BEFORE[:-2] + f',"replay_of":"{ORIGINAL}"}}}}'
    decoded = from_columns(columns)
    assert isinstance(decoded, MessageAppended) and decoded.generation == replayed


def message(role: str, n: int) -> views.PathMessage:
    return views.PathMessage(
        id=uuid.UUID(int=n), conversation_id=uuid.UUID(int=99), parent_message_id=None if n == 1 else uuid.UUID(int=n - 1),
        role=role, content=f"{role} {n}", metadata={}, depth=n - 1, seq=n, created_at=datetime(2026, 1, 1, tzinfo=UTC),
        sibling_count=1, sibling_position=1,
    )  # fmt: skip


PATH = [message(role, n) for n, role in enumerate(["system", "user", "assistant", "user", "assistant", "user"], 1)]


def test_every_user_message_at_or_below_the_start_is_a_turn_with_the_reply_right_under_it():
    chosen = choose_turns(PATH, None, "fork", None, 10)
    assert chosen.turns == [TurnRef(PATH[1].id, PATH[2].id), TurnRef(PATH[3].id, PATH[4].id), TurnRef(PATH[5].id, None)]
    assert chosen.base == PATH[0]
    later = choose_turns(PATH, PATH[2].id, "branches", None, 10)
    assert [t.user_id for t in later.turns] == [PATH[3].id, PATH[5].id] and later.base == PATH[2]


@pytest.mark.parametrize(
    "start, into, system, max_turns, words",
    [
        (uuid.UUID(int=404), "fork", None, 10, "not a message on the path"),
        (None, "fork", None, 2, "at most 2 turns"),
        (None, "branches", "new system", 10, "needs the results in a fork"),
        (uuid.UUID(int=4), "fork", "new system", 10, "start at the path's first user message"),
    ],
)
def test_a_replay_that_cannot_be_run_as_asked_is_refused(start, into, system, max_turns, words):
    with pytest.raises(InvalidRequest, match=words):
        choose_turns(PATH, start, into, system, max_turns)


def test_a_path_from_a_user_root_replays_into_a_fork_only_and_one_without_users_not_at_all():
    from_root = PATH[1:]
    assert choose_turns(from_root, None, "fork", "new system", 10).base is None
    with pytest.raises(InvalidRequest, match="branch needs a message to grow from"):
        choose_turns(from_root, None, "branches", None, 10)
    with pytest.raises(InvalidRequest, match="nothing to replay"):
        choose_turns(PATH[:1], None, "fork", None, 10)


def test_the_ids_of_a_runs_turns_are_the_same_wherever_they_are_written():
    run = uuid.uuid4()
    assert new_ids(run, 3) == new_ids(run, 3)
    assert len({*new_ids(run, 0), *new_ids(run, 1), *new_ids(uuid.uuid4(), 0)}) == 6


def call(call_id: str, name: str, arguments: str) -> FunctionToolCall:
    return FunctionToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def asking(n: int, *calls: FunctionToolCall, params: dict | None = None) -> views.PathMessage:
    generation = None if params is None else msgspec.structs.replace(GENERATION, params=params)
    return msgspec.structs.replace(message("assistant", n), content=None, tool_calls=list(calls), generation=generation)


def result(n: int, call_id: str, text: str) -> views.PathMessage:
    return msgspec.structs.replace(message("tool", n), content=text, tool_call_id=call_id)


SEARCH = tools.Call("function", "search", '{"q": "cats", "n": 2}')


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ('{"q": "cats", "n": 2}', '{"n":2,"q":"cats"}', True),  # spacing and key order do not matter
        ('{"q": {"a": [1, 2]}}', '{ "q" : { "a" : [1,2] } }', True),
        ('{"n": 1}', '{"n": 1.0}', False),  # numbers as written
        ('{"n": true}', '{"n": 1}', False),
        ('{"q": "cats"}', '{"q": "Cats"}', False),
        ("not json", "not json", True),  # not JSON: the text, character for character
        ("not json", "not  json", False),
        ('{"q": 1}', '{"q": 1', False),
        ("", "", True),
    ],
)
def test_arguments_are_the_same_as_json_values_else_as_text(a, b, equal):
    assert tools.same_arguments(a, b) is equal and tools.same_arguments(b, a) is equal


def test_a_call_is_the_same_by_kind_name_and_arguments():
    assert tools.same(SEARCH, tools.Call("function", "search", '{"n": 2, "q": "cats"}'))
    assert not tools.same(SEARCH, tools.Call("function", "find", '{"q": "cats", "n": 2}'))
    assert not tools.same(SEARCH, tools.Call("custom", "search", '{"q": "cats", "n": 2}'))


TURN = [
    message("system", 1),
    message("user", 2),
    asking(3, call("a", "search", '{"q": "cats"}'), call("b", "search", '{"q": "dogs"}'), params={"tools": [{"type": "function"}], "tool_choice": "auto", "temperature": 1}),
    result(4, "b", "dogs found"),
    result(5, "a", "cats found"),
    asking(6, call("c", "weather", "{}")),  # its result is not on the path
    message("assistant", 7),
    message("user", 8),
]  # fmt: skip


def test_a_turns_steps_are_its_assistant_messages_each_with_the_tool_messages_after_it():
    steps = tools.turn_steps(TURN, 1)
    assert [(s.message.id, [r.id for r in s.results]) for s in steps] == [
        (TURN[2].id, [TURN[3].id, TURN[4].id]), (TURN[5].id, []), (TURN[6].id, []),
    ]  # fmt: skip
    assert tools.turn_steps(TURN, 7) == [] and tools.turn_steps(TURN, 0) == []
    assert choose_turns(TURN, None, "fork", None, 10).turns == [TurnRef(TURN[1].id, TURN[6].id), TurnRef(TURN[7].id, None)]
    ends_asking = TURN[:6]
    assert choose_turns(ends_asking, None, "fork", None, 10).turns == [TurnRef(TURN[1].id, None)]


def test_the_same_calls_reuse_the_recorded_results_answering_the_new_ids_each_once_in_order():
    step = tools.turn_steps(TURN, 1)[0]
    reply = Utterance(role="assistant", tool_calls=[call("n1", "search", '{"q":"dogs"}'), call("n2", "search", '{ "q": "cats" }')])
    resolved = tools.resolve(step, reply)
    assert isinstance(resolved, tools.Reused)
    assert [(r.role, r.content, r.tool_call_id) for r in resolved.results] == [
        ("tool", "dogs found", "n1"), ("tool", "cats found", "n2"),
    ]  # fmt: skip
    twice = Utterance(role="assistant", tool_calls=[call("n1", "search", '{"q":"cats"}'), call("n2", "search", '{"q":"cats"}')])
    assert tools.resolve(step, twice) == tools.Unrecorded([tools.Call("function", "search", '{"q":"cats"}')])


def test_a_call_never_recorded_at_this_step_stops_naming_the_tool_and_its_arguments():
    first, second, last = tools.turn_steps(TURN, 1)
    other = Utterance(role="assistant", tool_calls=[call("n1", "search", '{"q": "cats"}'), call("n2", "search", '{"q": "birds"}')])
    stopped = tools.resolve(first, other)
    assert stopped == tools.Unrecorded([tools.Call("function", "search", '{"q": "birds"}')])
    assert isinstance(stopped, tools.Unrecorded) and "'search' with arguments {\"q\": \"birds\"}" in stopped.detail
    cats = Utterance(role="assistant", tool_calls=[call("n", "search", '{"q": "cats"}')])
    assert isinstance(tools.resolve(second, cats), tools.Unrecorded)  # another step's call is not this step's
    weather = Utterance(role="assistant", tool_calls=[call("n", "weather", "{}")])
    assert isinstance(tools.resolve(second, weather), tools.Unrecorded)  # asked, but no result was recorded
    assert isinstance(tools.resolve(last, cats), tools.Unrecorded)  # the original answered text here
    assert isinstance(tools.resolve(None, cats), tools.Unrecorded)  # the original turn had no such step
    long = tools.Unrecorded([tools.Call("function", "search", "x" * 1000)])
    assert len(long.detail) < 400


def test_a_redacted_result_recorded_nothing():
    redacted = msgspec.structs.replace(TURN[4], content="", redacted=views.Redaction(at=TURN[4].created_at, by="a", reason="r", erased=False))
    step = tools.turn_steps([*TURN[:4], redacted, *TURN[5:]], 1)[0]
    assert [r.call.name for r in tools.recorded(step)] == ["search"]  # b's result only
    cats = Utterance(role="assistant", tool_calls=[call("n", "search", '{"q": "cats"}')])
    assert isinstance(tools.resolve(step, cats), tools.Unrecorded)


def test_a_text_answer_is_the_turns_reply_and_a_divergence_where_the_original_called_tools():
    first, _, last = tools.turn_steps(TURN, 1)
    text = Utterance(role="assistant", content="no tools needed")
    assert tools.resolve(first, text) == tools.Diverged()
    assert tools.resolve(last, text) == tools.Replied()
    assert tools.resolve(None, text) == tools.Replied()


def test_a_turn_is_offered_the_targets_tools_else_those_its_original_step_was_given():
    steps = tools.turn_steps(TURN, 1)
    assert tools.offered(Params(temperature=0.5), steps) == Params(
        temperature=0.5, tools=[{"type": "function"}], tool_choice="auto"
    )
    own = Params(tools=[{"type": "function", "function": {"name": "x"}}])
    assert tools.offered(own, steps) == own
    assert tools.offered(Params(), tools.turn_steps(TURN, 7)) == Params()
