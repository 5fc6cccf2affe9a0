"""Windows and tool-call groups: given an agent's path, the last-N and token-budget windows keep an
assistant message with calls and its results as one unit; a model is never shown a call without
its result."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import calls
from service.domain.errors import IncompleteToolCalls, InvalidRequest
from service.domain.message import FunctionCall, FunctionToolCall, Utterance, text_of, tool_call_ids
from service.domain.window import MESSAGE_OVERHEAD, REPLY_OVERHEAD, complete, fit_turn, fit_window, last_messages


def words(message: Utterance) -> int:
    """A message's tokens: a word of text, or a call, each one."""
    return len(text_of(message).split()) + len(tool_call_ids(message))


def msg(role: str, text: str = "w") -> Utterance:
    return Utterance(role=role, content=text)  # type: ignore[arg-type]


def asks(*ids: str) -> Utterance:
    return Utterance(
        role="assistant", content=None,
        tool_calls=[FunctionToolCall(id=i, function=FunctionCall(name="f", arguments="{}")) for i in ids],
    )  # fmt: skip


def result(call_id: str, text: str = "w") -> Utterance:
    return Utterance(role="tool", content=text, tool_call_id=call_id)


SYSTEM, Q = msg("system", "rules"), msg("user", "q")
A = asks("c1", "c2")
T1, T2 = result("c1"), result("c2")
DONE, NEXT = msg("assistant", "done"), msg("user", "next")
PATH = [SYSTEM, Q, A, T1, T2, DONE, NEXT]


def test_a_last_window_cut_inside_a_group_starts_at_its_call() -> None:
    assert last_messages(PATH, 3) == [SYSTEM, A, T1, T2, DONE, NEXT]
    assert last_messages(PATH, 4) == [SYSTEM, A, T1, T2, DONE, NEXT]
    assert last_messages(PATH, 2) == [SYSTEM, DONE, NEXT]


def test_a_last_window_of_one_result_holds_its_whole_group() -> None:
    path = [Q, A, T1, T2]
    assert last_messages(path, 1) == [A, T1, T2]


def cost(*messages: Utterance) -> int:
    return REPLY_OVERHEAD + sum(words(m) + MESSAGE_OVERHEAD for m in messages)


def test_a_token_window_takes_a_group_whole_or_leaves_it_out() -> None:
    assert fit_window(PATH, cost(*PATH), words) == PATH
    # One token short of the group: it is left out whole, and nothing older is taken.
    assert fit_window(PATH, cost(SYSTEM, A, T1, T2, DONE, NEXT) - 1, words) == [SYSTEM, DONE, NEXT]


def test_a_turn_sending_results_is_refused_when_its_group_does_not_fit() -> None:
    path = [Q, A, T1, T2]
    assert fit_turn(path, cost(A, T1, T2), words) == [A, T1, T2]
    with pytest.raises(InvalidRequest) as refused:
        fit_turn(path, cost(T1, T2), words)
    assert refused.value.context["tokens"] == cost(A, T1, T2)


def test_a_context_with_a_call_without_its_result_is_refused_naming_the_calls() -> None:
    with pytest.raises(IncompleteToolCalls) as refused:
        complete([Q, A, T1, NEXT])
    assert refused.value.context == {"tool_call_ids": ["c2"]}
    assert "'c2'" in refused.value.detail
    assert complete(PATH) == PATH


# --- property: random agent traces ---------------------------------------------------------------


@st.composite
def traces(draw: st.DrawFn) -> list[Utterance]:
    """A path an agent leaves: a system prompt maybe, then turns of user text, assistant text, and
    assistant calls (one or parallel) answered in any order; the last group may still be open."""
    path: list[Utterance] = [msg("system", "be brief")] if draw(st.booleans()) else []
    n = 0
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["user", "assistant", "calls", "system"]))
        text = " ".join("w" * draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 6))))
        if kind == "calls":
            ids = [f"c{n + i}" for i in range(draw(st.integers(1, 4)))]
            n += len(ids)
            path.append(asks(*ids))
            path.extend(result(i, text) for i in draw(st.permutations(ids)))
        else:
            path.append(msg(kind, text))
    if draw(st.booleans()):  # an open group at the end: some of its calls answered
        ids = [f"c{n + i}" for i in range(draw(st.integers(1, 3)))]
        path.append(asks(*ids))
        path.extend(result(i) for i in ids[: draw(st.integers(0, len(ids) - 1))])
    return path


def honours_groups(path: list[Utterance], window: list[Utterance]) -> None:
    """The window never starts with a result, and holds each unit of the path whole or not at all."""
    assert not window or window[0].role != "tool"
    kept = {id(m) for m in window}
    for start, end in calls.units(path):
        inside = [id(m) in kept for m in path[start:end]]
        assert all(inside) or not any(inside), (path[start:end], window)
    assert [m for m in path if id(m) in kept] == window  # in path order, nothing added


@settings(max_examples=300, deadline=None)
@given(traces(), st.integers(1, 20), st.integers(0, 120))
def test_every_window_of_an_agent_trace_honours_the_group_rule(path: list[Utterance], n: int, budget: int) -> None:
    honours_groups(path, last_messages(path, n))
    honours_groups(path, fit_window(path, budget, words))
    window = fit_window(path, budget, words)
    missing = calls.unanswered(window)
    open_at_end = calls.ended_by(path[calls.units(path)[-1][0]:]) if path else None
    assert set(missing) <= set(open_at_end.pending if open_at_end else [])
