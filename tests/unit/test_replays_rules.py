"""Replay runs' pure rules: `replay_of` leaves every other event's bytes alone, which turns a path
replays and where they may go, and the tool rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from service.app.replay_runs import tools
from service.app.replay_runs.plan import TurnRef, choose_turns, new_ids
from service.domain import views
from service.domain.errors import InvalidRequest
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


SEARCH = tools.ToolCall("search", {"q": "cats", "n": 2})


def test_a_tool_call_with_the_same_name_and_arguments_reuses_the_recorded_result_once_each():
    recorded = [tools.Recorded(SEARCH, "first"), tools.Recorded(SEARCH, "second")]
    same = tools.ToolCall("search", {"n": 2, "q": "cats"})  # key order does not matter
    assert tools.answer([same, SEARCH], recorded) == tools.Reused(["first", "second"])
    assert tools.answer([], []) == tools.Reused([])


def test_a_tool_call_never_recorded_stops_the_path_naming_the_tool():
    recorded = [tools.Recorded(SEARCH, "first")]
    other = tools.ToolCall("search", {"q": "dogs", "n": 2})
    stopped = tools.answer([SEARCH, other], recorded)
    assert stopped == tools.Unrecorded(other) and "'search'" in stopped.detail
    assert tools.answer([SEARCH, SEARCH], recorded) == tools.Unrecorded(SEARCH)  # each result is used once
