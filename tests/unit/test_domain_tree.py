"""Tree rules as pure decisions: given a conversation state, when a command, then events."""

import uuid

import msgspec
import pytest

from service.domain import errors, tree
from service.domain.events import (
    GENESIS_HASH,
    Envelope,
    HeadMoved,
    MessageAppended,
    body_digest,
    chain_hash,
    from_columns,
    seal,
    to_columns,
)
from service.domain.window import last_messages

CONV = uuid.UUID(int=1)
FAMILY = uuid.UUID(int=2)


def state(head=None, messages=0, leaves=0):
    return tree.ConversationState(
        conversation_id=CONV, family_id=FAMILY, head_id=head, message_count=messages,
        leaf_count=leaves, last_seq=0, last_hash=GENESIS_HASH,
    )


def node(mid, depth=0, has_children=False, parent=None, content="x", role="user", conversation=CONV):
    return tree.Node(
        message_id=mid, conversation_id=conversation, parent_id=parent, role=role, depth=depth,
        body_sha256=body_digest(content), metadata={}, has_children=has_children,
    )


def append(mid, content="x", parent=None, expected=None, role="user"):
    return tree.AppendMessage(
        message_id=mid, parent_id=parent, role=role, content=content, metadata={}, expected_head=expected
    )


def test_first_message_of_an_empty_conversation_is_the_root():
    m = uuid.uuid4()
    decision = tree.decide_append(state(), append(m), parent=None, existing=None)
    [event] = decision.events
    assert event.parent_id is None and event.depth == 0
    assert decision.state.head_id == m
    assert (decision.state.message_count, decision.state.leaf_count) == (1, 1)


def test_append_without_parent_attaches_to_the_head_and_moves_it():
    head = uuid.uuid4()
    m = uuid.uuid4()
    decision = tree.decide_append(state(head, 1, 1), append(m), parent=node(head, depth=3), existing=None)
    [event] = decision.events
    assert event.parent_id == head and event.depth == 4
    assert decision.state.head_id == m
    assert decision.state.leaf_count == 1  # the old leaf is no longer a tip


def test_append_under_a_message_that_has_children_adds_a_branch_tip():
    head, inner, m = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    decision = tree.decide_append(
        state(head, 3, 1), append(m, parent=inner), parent=node(inner, 1, has_children=True), existing=None
    )
    assert decision.events[0].parent_id == inner
    assert decision.state.leaf_count == 2
    assert decision.state.head_id == m


def test_missing_parent_is_refused():
    with pytest.raises(errors.ParentNotFound):
        tree.decide_append(state(uuid.uuid4(), 1, 1), append(uuid.uuid4(), parent=uuid.uuid4()), None, None)


def test_expected_head_that_moved_is_refused():
    head = uuid.uuid4()
    with pytest.raises(errors.HeadMoved):
        tree.decide_append(state(head, 1, 1), append(uuid.uuid4(), expected=uuid.uuid4()), node(head), None)


def test_retry_with_same_id_and_body_records_nothing():
    m, parent = uuid.uuid4(), uuid.uuid4()
    existing = node(m, 1, parent=parent, content="hello")
    result = tree.decide_append(state(m, 2, 1), append(m, "hello"), parent=node(m, 1), existing=existing)
    assert isinstance(result, tree.AlreadyAppended) and result.node == existing


@pytest.mark.parametrize(
    "change", [{"content": "other"}, {"role": "assistant"}, {"parent": uuid.UUID(int=99)}]
)
def test_retry_with_same_id_but_other_content_or_place_conflicts(change):
    m, parent = uuid.uuid4(), uuid.uuid4()
    existing = node(m, 1, parent=parent, content="hello")
    kwargs = {"content": "hello"} | change
    with pytest.raises(errors.MessageIdConflict):
        tree.decide_append(state(m, 2, 1), append(m, **kwargs), parent=None, existing=existing)


def test_id_used_in_another_conversation_conflicts():
    m = uuid.uuid4()
    existing = node(m, conversation=uuid.uuid4())
    with pytest.raises(errors.MessageIdConflict):
        tree.decide_append(state(), append(m), parent=None, existing=existing)


def test_moving_the_head_records_the_previous_head():
    head, target = uuid.uuid4(), uuid.uuid4()
    decision = tree.decide_move_head(state(head, 2, 2), node(target), target)
    assert decision.events == [HeadMoved(message_id=target, previous_id=head)]
    assert decision.state.head_id == target


def test_moving_the_head_where_it_is_records_nothing():
    head = uuid.uuid4()
    assert tree.decide_move_head(state(head, 1, 1), node(head), head).events == []


def test_moving_the_head_to_an_unknown_message_is_refused():
    with pytest.raises(errors.MessageNotFound):
        tree.decide_move_head(state(uuid.uuid4(), 1, 1), None, uuid.uuid4())


def test_columns_round_trip_every_event_type():
    events = [
        MessageAppended(message_id=uuid.uuid4(), parent_id=None, role="system", depth=0,
                        body_sha256=body_digest("s"), metadata={"k": [1, "two"]}),
        HeadMoved(message_id=uuid.uuid4(), previous_id=None),
        *tree.create_conversation(
            tree.CreateConversation(conversation_id=CONV, family_id=FAMILY, title="t", metadata={"a": 1},
                                    system=None, system_message_id=None)
        ),
    ]
    for event in events:
        assert from_columns(to_columns(event)) == event


def test_chain_links_each_event_to_the_previous_one():
    env = [Envelope(seq=i, tenant="t", conversation_id=CONV, family_id=FAMILY, actor="a", request_id=None,
                    created_at=__import__("datetime").datetime(2026, 1, 1)) for i in (1, 2)]
    events = [HeadMoved(message_id=uuid.UUID(int=5)), HeadMoved(message_id=uuid.UUID(int=6))]
    sealed = seal(GENESIS_HASH, env, events)
    assert sealed[0].hash == chain_hash(GENESIS_HASH, env[0], sealed[0].columns)
    assert sealed[1].hash == chain_hash(sealed[0].hash, env[1], sealed[1].columns)
    # Altering the first event changes every later link.
    altered = seal(GENESIS_HASH, env, [HeadMoved(message_id=uuid.UUID(int=7)), events[1]])
    assert altered[1].hash != sealed[1].hash


class M:
    def __init__(self, role):
        self.role = role


def test_last_n_keeps_the_final_messages_and_every_system_message():
    path = [M("system"), M("user"), M("assistant"), M("system"), M("user"), M("assistant")]
    kept = last_messages(path, 2)
    assert kept == [path[0], path[3], path[4], path[5]]
    assert last_messages(path, None) == path
    assert last_messages(path, 100) == path


def fork_command(at):
    return tree.ForkConversation(
        conversation_id=uuid.UUID(int=9), family_id=FAMILY, source_conversation_id=CONV,
        source_message_id=at, title="f", metadata={"k": 1},
    )


def test_a_fork_records_one_event_and_starts_at_its_base():
    base = uuid.uuid4()
    decision = tree.decide_fork(fork_command(base), node(base, depth=4, has_children=True))
    [event] = decision.events
    assert event == tree.ConversationForked(
        source_conversation_id=CONV, source_message_id=base, title="f", metadata={"k": 1}
    )
    s = decision.state
    assert (s.conversation_id, s.family_id, s.head_id) == (uuid.UUID(int=9), FAMILY, base)
    # The inherited path counts (root..base); the base is the only leaf, whatever it has in the source.
    assert (s.message_count, s.leaf_count, s.base_id, s.base_depth) == (5, 1, base, 4)
    assert s.last_hash == GENESIS_HASH


@pytest.mark.parametrize("visible", [None, False])
def test_a_fork_at_a_message_the_source_does_not_show_is_refused(visible):
    at = uuid.uuid4()
    seen = None if visible is None else tree.Node(
        message_id=at, conversation_id=CONV, parent_id=None, role="user", depth=0,
        body_sha256=body_digest("x"), metadata={}, has_children=False, visible=False,
    )
    with pytest.raises(errors.MessageNotFound):
        tree.decide_fork(fork_command(at), seen)


def test_a_message_the_conversation_does_not_show_is_no_parent_and_no_head():
    hidden = tree.Node(
        message_id=uuid.uuid4(), conversation_id=uuid.UUID(int=3), parent_id=None, role="user", depth=0,
        body_sha256=body_digest("x"), metadata={}, has_children=False, visible=False,
    )
    with pytest.raises(errors.ParentNotFound):
        tree.decide_append(state(), append(uuid.uuid4(), parent=hidden.message_id), parent=hidden, existing=None)
    with pytest.raises(errors.MessageNotFound):
        tree.decide_move_head(state(), hidden, hidden.message_id)


def test_an_inherited_parent_with_a_visible_child_adds_a_branch_tip():
    """In a fork, an inherited message above the base has one visible child (the next on the path)."""
    inherited = node(uuid.uuid4(), depth=1, has_children=True, conversation=uuid.UUID(int=3))
    decision = tree.decide_append(state(uuid.uuid4(), 4, 1), append(uuid.uuid4(), parent=inherited.message_id), inherited, None)
    assert (decision.state.message_count, decision.state.leaf_count) == (5, 2)
    assert decision.events[0].depth == 2


def test_a_path_message_counts_the_siblings_off_the_path_in_the_order_written():
    me, older, newer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # One of the conversation's own children, between an older and a newer sibling off the path.
    assert tree.sibling_place((1, 1), True, me, 20, {older: 10, newer: 30}) == (3, 2)
    # Under an inherited parent above a fork's base: the inherited child first, then the fork's own.
    assert tree.sibling_place((2, 2), True, me, 20, {older: 10}) == (3, 3)
    # The inherited child itself stays first, whatever the fork wrote beside it.
    assert tree.sibling_place((1, 1), False, me, 5, {older: 10, newer: 30}) == (3, 1)


KEY = bytes(range(32))


def test_an_append_records_its_body_digest_keyed_with_the_key_it_was_given():
    m = uuid.uuid4()
    cmd = tree.AppendMessage(message_id=m, parent_id=None, role="user", content="4821", metadata={}, digest_key=KEY)
    [event] = tree.decide_append(state(), cmd, parent=None, existing=None).events
    assert event.body_sha256 == body_digest("4821", KEY) != body_digest("4821")
    assert event.digest_key == KEY
    # The key is kept beside the body, never in the log: the event's columns do not carry it.
    assert KEY.hex() not in to_columns(event).payload and from_columns(to_columns(event)).digest_key is None
    [sealed] = seal(GENESIS_HASH, [_envelope()], [event])
    assert sealed.digest_key == KEY


def test_a_retry_is_compared_with_the_stored_key_of_the_message_it_repeats():
    m = uuid.uuid4()
    stored = tree.Node(
        message_id=m, conversation_id=CONV, parent_id=None, role="user", depth=0,
        body_sha256=body_digest("4821", KEY), metadata={}, has_children=False, digest_key=KEY,
    )  # fmt: skip
    retry = tree.AppendMessage(message_id=m, parent_id=None, role="user", content="4821", metadata={}, digest_key=bytes(32))
    assert isinstance(tree.decide_append(state(m, 1, 1), retry, parent=None, existing=stored), tree.AlreadyAppended)
    other = msgspec.structs.replace(retry, content="4822")
    with pytest.raises(errors.MessageIdConflict):
        tree.decide_append(state(m, 1, 1), other, parent=None, existing=stored)


def test_a_digest_key_has_one_length():
    with pytest.raises(ValueError):
        body_digest("x", b"short")


def _envelope():
    from datetime import UTC, datetime

    return Envelope(seq=1, tenant="t", conversation_id=CONV, family_id=FAMILY, actor="a", request_id=None,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
