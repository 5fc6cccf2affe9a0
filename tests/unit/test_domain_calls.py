"""Tool-call groups as pure decisions: given the messages of a path, when a tool message is
appended under its last one, then the event, or the refusal naming the call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from service.domain import calls, views
from service.domain.errors import DuplicateToolResult, ToolResultWithoutCall
from service.domain.events import MessageAppended
from service.domain.message import FunctionCall, FunctionToolCall, Utterance, tool_call_ids
from service.domain.tree import Append, ConversationState, appended_node, decide_append, fold
from service.domain.turns import decide_chain

CID, FAMILY = uuid.UUID(int=1), uuid.UUID(int=2)
EMPTY = ConversationState(
    conversation_id=CID, family_id=FAMILY, head_id=None, message_count=0, leaf_count=0, last_seq=0, last_hash=bytes(32)
)


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> FunctionToolCall:
    return FunctionToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def user(text: str = "hi") -> Append:
    return Append(role="user", content=text, message_id=uuid.uuid4(), parent_id=None)


def asks(*ids: str) -> Append:
    return Append(role="assistant", content=None, tool_calls=[call(i) for i in ids], message_id=uuid.uuid4(), parent_id=None)


def says(text: str = "ok") -> Append:
    return Append(role="assistant", content=text, message_id=uuid.uuid4(), parent_id=None)


def result(call_id: str, text: str = "42") -> Append:
    return Append(role="tool", content=text, tool_call_id=call_id, message_id=uuid.uuid4(), parent_id=None)


def given(*messages: Append) -> tuple[ConversationState, list[MessageAppended]]:
    """A conversation whose path is `messages`, root first, each appended under the one before."""
    chain = [msgspec.structs.replace(m, parent_id=None) for m in messages]
    events = decide_chain(EMPTY, None, chain) if chain else []
    return fold(EMPTY, events), events


def tail(path: list[MessageAppended]) -> list[MessageAppended]:
    """The end of `path` the store's call_group_tail reads: from the nearest non-tool message."""
    start = len(path) - 1
    while start > 0 and path[start].role == "tool":
        start -= 1
    return path[start:]


def when_appended(path: list[MessageAppended], state: ConversationState, cmd: Append) -> list[MessageAppended]:
    """`cmd` appended under the path's last message, decided on the group the store would show."""
    parent = appended_node(path[-1], CID) if path else None
    cmd = msgspec.structs.replace(cmd, parent_id=None if parent is None else parent.message_id)
    events = decide_append(state, cmd, parent, None, calls.ended_by(tail(path)))
    assert isinstance(events, list)
    return events  # type: ignore[return-value]


def test_a_result_under_the_assistant_message_that_asked_for_it_is_appended() -> None:
    state, path = given(user(), asks("c1"))
    [event] = when_appended(path, state, result("c1"))
    assert (event.role, event.tool_call_id, event.parent_id) == ("tool", "c1", path[-1].message_id)


def test_results_of_one_call_group_follow_each_other_in_any_order() -> None:
    state, path = given(user(), asks("c1", "c2", "c3"), result("c3"), result("c1"))
    [event] = when_appended(path, state, result("c2"))
    assert event.tool_call_id == "c2"


def test_a_result_under_a_message_that_asked_for_no_call_is_refused_naming_the_id() -> None:
    state, path = given(user(), says())
    with pytest.raises(ToolResultWithoutCall) as refused:
        when_appended(path, state, result("c1"))
    assert refused.value.context == {"tool_call_id": "c1"}
    assert "'c1'" in refused.value.detail


def test_a_result_for_a_call_the_assistant_message_did_not_make_is_refused() -> None:
    state, path = given(user(), asks("c1"))
    with pytest.raises(ToolResultWithoutCall) as refused:
        when_appended(path, state, result("c9"))
    assert refused.value.context == {"tool_call_id": "c9"}


def test_a_second_result_for_one_call_is_refused_naming_the_id() -> None:
    state, path = given(user(), asks("c1", "c2"), result("c1"))
    with pytest.raises(DuplicateToolResult) as refused:
        when_appended(path, state, result("c1"))
    assert refused.value.context == {"tool_call_id": "c1"}


def test_a_result_after_the_group_was_left_is_refused() -> None:
    """A user message ends the group: a late result under it answers nothing it follows."""
    state, path = given(user(), asks("c1", "c2"), result("c1"), user("and?"))
    with pytest.raises(ToolResultWithoutCall):
        when_appended(path, state, result("c2"))


def test_a_result_of_an_earlier_group_is_refused_under_a_later_one() -> None:
    state, path = given(user(), asks("c1"), result("c1"), asks("c2"))
    with pytest.raises(ToolResultWithoutCall):
        when_appended(path, state, result("c1"))


def test_a_tool_message_as_the_first_message_is_refused() -> None:
    with pytest.raises(ToolResultWithoutCall):
        when_appended([], EMPTY, result("c1"))


def test_a_tool_message_decided_without_its_group_is_refused() -> None:
    """A writer that did not read the group (decide_append's default) cannot let a result through."""
    state, path = given(user(), asks("c1"))
    cmd = msgspec.structs.replace(result("c1"), parent_id=path[-1].message_id)
    with pytest.raises(ToolResultWithoutCall):
        decide_append(state, cmd, appended_node(path[-1], CID), None)


def test_a_chain_may_hold_a_call_group_whole() -> None:
    state, path = given(user(), asks("c1", "c2"), result("c2"), result("c1"), says("done"))
    assert [e.role for e in path] == ["user", "assistant", "tool", "tool", "assistant"]


def test_a_chain_starting_with_results_answers_the_group_open_at_its_parent() -> None:
    state, path = given(user(), asks("c1", "c2"), result("c1"))
    parent = appended_node(path[-1], CID)
    chain = [msgspec.structs.replace(result("c2"), parent_id=parent.message_id), user("thanks")]
    events = decide_chain(state, parent, chain, calls.ended_by(tail(path)))
    assert [e.role for e in events] == ["tool", "user"]
    with pytest.raises(DuplicateToolResult):
        decide_chain(state, parent, [msgspec.structs.replace(result("c1"), parent_id=parent.message_id)], calls.ended_by(tail(path)))


def test_a_chain_with_a_result_out_of_its_group_is_refused() -> None:
    with pytest.raises(ToolResultWithoutCall):
        given(user(), asks("c1"), result("c1"), user(), result("c1"))


def test_the_group_open_at_a_message_lists_what_is_pending() -> None:
    _, path = given(user(), asks("c1", "c2", "c3"), result("c2"))
    group = calls.ended_by(tail(path))
    assert group == calls.CallGroup(("c1", "c2", "c3"), ("c2",))
    assert group.pending == ["c1", "c3"]
    assert calls.ended_by(tail(given(user())[1])) is None


def _viewed(event: MessageAppended, redacted: bool) -> views.Message:
    message = views.message_of(event, CID, 1, datetime(2025, 1, 1, tzinfo=UTC))
    if not redacted:
        return message
    at = datetime(2025, 1, 2, tzinfo=UTC)
    return msgspec.structs.replace(
        message, content=views.REDACTED_CONTENT, tool_calls=msgspec.UNSET,
        redacted=views.Redaction(at=at, by="admin", reason="pii", erased=False),
    )  # fmt: skip


def test_results_under_an_assistant_message_whose_calls_are_withheld_are_not_decided_on() -> None:
    """A redaction withholds the calls: results of them were checked when written, and still go."""
    state, path = given(user(), asks("c1"))
    shown = [_viewed(e, redacted=e.role == "assistant") for e in tail(path)]
    group = calls.ended_by(shown)
    assert group is calls.UNCHECKED
    cmd = msgspec.structs.replace(result("c1"), parent_id=path[-1].message_id)
    assert decide_append(state, cmd, appended_node(path[-1], CID), None, group)


def test_a_walk_that_stopped_inside_a_group_leaves_it_unchecked() -> None:
    _, path = given(user(), asks("c1", "c2"), result("c1"))
    assert calls.ended_by(path[-1:]) is calls.UNCHECKED


def test_units_keep_a_call_and_its_results_together() -> None:
    _, path = given(user(), asks("c1", "c2"), result("c1"), result("c2"), says(), user())
    assert calls.units(path) == [(0, 1), (1, 4), (4, 5), (5, 6)]
    assert calls.units([]) == []


def test_unanswered_names_the_calls_without_results_on_a_path() -> None:
    _, path = given(user(), asks("c1", "c2"), result("c1"), user(), asks("c3"))
    assert calls.unanswered(path) == ["c2", "c3"]
    _, done = given(user(), asks("c1"), result("c1"), says())
    assert calls.unanswered(done) == []


def test_opened_by_an_utterance() -> None:
    assert calls.opened(Utterance(role="assistant", content="x")) is None
    assert calls.opened(Utterance(role="assistant", tool_calls=[call("a")])) == calls.CallGroup(("a",))


def _unanswered_by_units(path: list[Utterance]) -> list[str]:
    """The rule read straight off its definition: cut the path into units, and in each unit headed by
    an assistant message with calls, the calls its tool messages do not answer."""
    missing: list[str] = []
    for start, end in calls.units(path):
        head = path[start]
        if head.role == "assistant":
            answered = {m.tool_call_id for m in path[start + 1 : end]}
            missing += [c for c in tool_call_ids(head) if c not in answered]
    return missing


_steps = st.lists(
    st.one_of(
        st.sampled_from(["user", "system", "assistant"]).map(lambda role: Utterance(role=role, content="w")),
        st.lists(st.sampled_from(["c1", "c2", "c3"]), min_size=1, max_size=3, unique=True).map(
            lambda ids: Utterance(
                role="assistant",
                content=None,
                tool_calls=[FunctionToolCall(id=i, function=FunctionCall(name="f", arguments="{}")) for i in ids],
            )
        ),
        st.sampled_from(["c1", "c2", "c3"]).map(lambda i: Utterance(role="tool", content="r", tool_call_id=i)),
    ),
    max_size=12,
)


@for_all(_steps)
def test_unanswered_in_one_pass_is_the_rule_read_by_units(path: list[Utterance]) -> None:
    assert calls.unanswered(path) == _unanswered_by_units(path)
