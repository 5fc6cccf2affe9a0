"""One message shape: every shape of a message extends Utterance, and a message event built through it
encodes, byte for byte, as the event of the same message always did (so stored hashes stand)."""

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import tree, views
from service.domain.events import (
    ContextRun,
    Envelope,
    Generation,
    Interruption,
    MessageAppended,
    body_digest,
    canonical_bytes,
    from_columns,
    to_columns,
)
from service.domain.message import ContextItem, Utterance, context_item, said
from service.upstream.base import ChatRequest


# The message event's encoding as convtree wrote it before the message had one shape (commit
# b21a2e6, service/domain/events.py), kept here verbatim as the reference.
class _OldMessagePayload(msgspec.Struct, frozen=True):
    metadata: dict[str, Any] = {}
    generation: Generation | None = None


class _OldPlainMessagePayload(msgspec.Struct, frozen=True):
    metadata: dict[str, Any] = {}


def _old_payload(metadata: dict[str, Any], generation: Generation | None) -> str:
    if generation is None:
        return msgspec.json.encode(_OldPlainMessagePayload(metadata=metadata)).decode()
    return msgspec.json.encode(_OldMessagePayload(metadata=metadata, generation=generation)).decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
generations = st.none() | st.builds(
    Generation,
    provider=st.text(max_size=8),
    model=st.text(max_size=8),
    requested_model=st.text(max_size=8),
    finish_reason=st.none() | st.sampled_from(["stop", "length", "interrupted"]),
    prompt_tokens=st.none() | st.integers(0, 10**6),
    latency_ms=st.floats(0, 1e6),
    context_ids=st.lists(st.uuids(), max_size=2),
    context=st.just(msgspec.UNSET) | st.lists(st.builds(ContextRun, count=st.integers(1, 10**6)), max_size=2),
    params=st.dictionaries(st.sampled_from(["temperature", "seed"]), st.integers(0, 9)),
    interruption=st.none() | st.builds(Interruption, kind=st.text(max_size=5), detail=st.text(max_size=5)),
    truncated=st.sampled_from([msgspec.UNSET, True]),
)


@settings(max_examples=100, deadline=None)
@given(
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.text(),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    generation=generations,
    parent=st.none() | st.uuids(),
    depth=st.integers(0, 10**6),
)
def test_a_message_event_built_through_the_one_shape_encodes_as_it_always_did(
    role, content, metadata, generation, parent, depth
):
    message_id = uuid.uuid4()
    cmd = tree.Append(message_id=message_id, parent_id=parent, role=role, content=content, metadata=metadata)
    event = msgspec.structs.replace(tree.appended(cmd, parent, depth), generation=generation)
    columns = to_columns(event)
    assert columns.payload == _old_payload(metadata, generation)
    assert (columns.type, columns.message_id, columns.parent_id, columns.role, columns.depth, columns.body_sha256) == (
        "message_appended", message_id, parent, role, depth, body_digest(content)
    )
    envelope = Envelope(
        seq=1, tenant="t", conversation_id=uuid.UUID(int=1), family_id=uuid.UUID(int=2), actor="a",
        request_id=None, created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    old = msgspec.json.encode([
        str(envelope.conversation_id), "message_appended", str(message_id), None if parent is None else str(parent),
        role, depth, body_digest(content).hex(), _old_payload(metadata, generation), "a", None,
        envelope.created_at.isoformat(),
    ])  # fmt: skip
    assert canonical_bytes(envelope, columns) == old
    assert from_columns(columns, content) == event


def test_an_empty_message_is_a_message():
    """Empty text is legal in the shape: a later field (tool calls) may carry the message."""
    cmd = tree.Append(message_id=uuid.UUID(int=3), parent_id=None, role="assistant", content="", metadata={})
    [event] = tree.decide_append(tree.initial_state(_create()), cmd, None, None)
    assert isinstance(event, MessageAppended) and event.content == "" and event.body_sha256 == body_digest("")
    assert to_columns(event).payload == '{"metadata":{}}'


def test_every_shape_of_a_message_says_the_same_thing():
    utterance = Utterance("user", "hi", {"k": 1})
    cmd = tree.Append(**said(utterance), message_id=uuid.UUID(int=4), parent_id=None)
    event = tree.appended(cmd, None, 0)
    view = views.message_of(event, uuid.UUID(int=1), 7, datetime(2026, 1, 1, tzinfo=UTC))
    item = context_item(view.id, view)
    request = ChatRequest(model="m", messages=[item])
    for shape in (cmd, event, view, item, request.messages[0]):
        assert isinstance(shape, Utterance) and said(shape) == said(utterance)
    assert item == ContextItem(role="user", content="hi", metadata={"k": 1}, id=uuid.UUID(int=4))


def _create() -> tree.Create:
    return tree.Create(
        conversation_id=uuid.UUID(int=1), family_id=uuid.UUID(int=2), title=None, metadata={}, system=None,
        system_message_id=None,
    )
