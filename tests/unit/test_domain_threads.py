"""Auto-threading's rules: what a match compares, the path digest chain, the common prefix."""

from __future__ import annotations

import uuid

from service.domain.events import MessageAppended
from service.domain.message import CustomCall, CustomToolCall, FunctionCall, FunctionToolCall, Utterance
from service.domain.threads import ROOT, matched, path_digest, path_digests, prefix_digests, said_key

S = Utterance(role="system", content="rules")
Q1 = Utterance(role="user", content="one")
A1 = Utterance(role="assistant", content="hello")
Q2 = Utterance(role="user", content="two")


def test_metadata_and_reasoning_are_not_matched_but_everything_said_is():
    assert said_key(Utterance(role="user", content="x", metadata={"a": 1})) == said_key(Utterance(role="user", content="x"))
    reasoned = Utterance(role="assistant", content="x", reasoning_content="because", reasoning={"e": "..."})
    assert said_key(reasoned) == said_key(Utterance(role="assistant", content="x"))
    assert said_key(Utterance(role="user", content="x")) != said_key(Utterance(role="system", content="x"))
    assert said_key(Utterance(role="user", content="x")) != said_key(Utterance(role="user", content="x", name="n"))
    assert said_key(Utterance(role="user", content="x")) != said_key(Utterance(role="user", content=[{"type": "text", "text": "x"}]))
    call = FunctionToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))
    other = FunctionToolCall(id="c2", function=FunctionCall(name="f", arguments="{}"))
    custom = CustomToolCall(id="c1", custom=CustomCall(name="f", input="{}"))
    keys = {said_key(Utterance(role="assistant", tool_calls=[c])) for c in (call, other, custom)}
    assert len(keys) == 3
    tool = Utterance(role="tool", content="r", tool_call_id="c1")
    assert said_key(tool) != said_key(Utterance(role="tool", content="r", tool_call_id="c2"))


def test_an_empty_content_or_refusal_is_the_same_as_an_absent_one():
    call = [FunctionToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))]
    absent = said_key(Utterance(role="assistant", tool_calls=call))
    for content in (None, "", []):
        assert said_key(Utterance(role="assistant", content=content, tool_calls=call, refusal=None)) == absent


def test_a_path_digest_names_the_whole_path_root_first():
    assert prefix_digests([S, Q1]) == [path_digest(ROOT, S), path_digest(path_digest(ROOT, S), Q1)]
    assert prefix_digests([Q1, S])[-1] != prefix_digests([S, Q1])[-1]
    assert prefix_digests([S, Q1, A1])[:2] == prefix_digests([S, Q1])


def test_new_messages_are_digested_under_their_stored_parent_or_not_at_all():
    ids = [uuid.uuid4() for _ in range(3)]
    parent = uuid.uuid4()

    def appended(m: Utterance, i: int, parent_id: uuid.UUID | None) -> MessageAppended:
        return MessageAppended(
            role=m.role, content=m.content, message_id=ids[i], parent_id=parent_id, depth=i, body_sha256=b"0" * 32
        )

    chain = [appended(S, 0, None), appended(Q1, 1, ids[0]), appended(A1, 2, ids[1])]
    assert list(path_digests(chain, {}).values()) == prefix_digests([S, Q1, A1])
    under = [appended(Q2, 0, parent)]
    stored = path_digest(ROOT, Q1)
    assert path_digests(under, {parent: stored}) == {ids[0]: path_digest(stored, Q2)}
    assert path_digests(under, {parent: None}) == {} == path_digests(under, {})


def test_matched_is_the_common_prefix_and_nothing_unless_the_roots_agree():
    assert matched([S, Q1, A1, Q2], [S, Q1, A1]) == 3
    assert matched([S, Q1, Utterance(role="assistant", content="edited"), Q2], [S, Q1, A1]) == 2
    assert matched([Q2], [S, Q1, A1]) == 0
    assert matched([S, Q1], [S, Q1, A1]) == 2
