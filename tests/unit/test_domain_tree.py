"""Tree rules as pure decisions: given a conversation (the events that made it), when a command,
then these events, and the state they fold into."""

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
from service.domain.message import Utterance
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
    return tree.Append(
        message_id=mid, parent_id=parent, role=role, content=content, metadata={}, expected_head=expected
    )


CREATE = tree.Create(conversation_id=CONV, family_id=FAMILY, title=None, metadata={}, system=None, system_message_id=None)


def given(*commands):
    """A conversation after `commands` (appends under their named parent, or the head), and what a
    store would show a decision of it: every message as a Node, and the log that holds them."""
    log = tree.create_conversation(CREATE)
    s = tree.fold(tree.initial_state(CREATE), log)
    nodes = {}
    for cmd in commands:
        ref = cmd.parent_id or s.head_id
        parent = nodes.get(ref)
        events = tree.decide_append(s, cmd, parent, None)
        s = tree.fold(s, events)
        log += events
        if parent is not None:
            nodes[ref] = msgspec.structs.replace(parent, has_children=True)
        nodes[cmd.message_id] = tree.appended_node(events[0], CONV)
    return s, nodes, log


M1, M2, M3, M4 = (uuid.UUID(int=10 + i) for i in range(4))


def test_first_message_of_an_empty_conversation_is_the_root():
    s, _, _ = given()
    events = tree.decide_append(s, append(M1, "hi"), parent=None, existing=None)
    assert events == [MessageAppended(
        message_id=M1, parent_id=None, role="user", content="hi", metadata={}, depth=0, body_sha256=body_digest("hi"),
    )]  # fmt: skip
    after = tree.fold(s, events)
    assert (after.head_id, after.message_count, after.leaf_count) == (M1, 1, 1)


def test_append_without_parent_attaches_to_the_head_and_moves_it():
    s, nodes, _ = given(append(M1), append(M2))
    events = tree.decide_append(s, append(M3), parent=nodes[M2], existing=None)
    [event] = events
    assert event.parent_id == M2 and event.depth == 2
    after = tree.fold(s, events)
    assert after.head_id == M3
    assert (after.message_count, after.leaf_count) == (3, 1)  # the old leaf is no longer a tip


def test_append_under_a_message_that_has_children_adds_a_branch_tip():
    s, nodes, _ = given(append(M1), append(M2))
    events = tree.decide_append(s, append(M3, parent=M1), parent=nodes[M1], existing=None)
    assert events[0].parent_id == M1
    after = tree.fold(s, events)
    assert (after.head_id, after.message_count, after.leaf_count) == (M3, 3, 2)


def test_a_state_read_from_the_summary_row_counts_leaves_from_the_nodes_it_was_shown():
    """The summary row does not list the leaves; the parent a decision was shown tells evolve."""
    row = state(M2, 2, 1)  # M1 -> M2, as read back from the store
    for parent, leaves in [(node(M2, 1, parent=M1), 1), (node(M1, 0, has_children=True), 2)]:
        s = tree.seen(row, parent)
        events = tree.decide_append(s, append(M3, parent=parent.message_id), parent, None)
        assert tree.fold(s, events).leaf_count == leaves


def test_a_conversation_created_with_a_system_prompt_starts_at_it():
    cmd = msgspec.structs.replace(CREATE, system="be brief", system_message_id=M1)
    events = tree.create_conversation(cmd)
    assert [type(e) for e in events] == [tree.ConversationCreated, MessageAppended]
    assert (events[1].role, events[1].content, events[1].depth) == ("system", "be brief", 0)
    after = tree.fold(tree.initial_state(cmd), events)
    assert (after.head_id, after.message_count, after.leaf_count) == (M1, 1, 1)


def test_missing_parent_is_refused():
    with pytest.raises(errors.ParentNotFound):
        tree.decide_append(state(uuid.uuid4(), 1, 1), append(uuid.uuid4(), parent=uuid.uuid4()), None, None)


def test_expected_head_that_moved_is_refused():
    head = uuid.uuid4()
    with pytest.raises(errors.StaleHead):
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
    s, nodes, _ = given(append(M1), append(M2), append(M3, parent=M1))
    events = tree.decide_move_head(s, nodes[M2], M2)
    assert events == [HeadMoved(message_id=M2, previous_id=M3)]
    after = tree.fold(s, events)
    assert (after.head_id, after.message_count, after.leaf_count) == (M2, 3, 2)


def test_moving_the_head_where_it_is_records_nothing():
    s, nodes, _ = given(append(M1))
    assert tree.decide_move_head(s, nodes[M1], M1) == []


def test_moving_the_head_to_an_unknown_message_is_refused():
    with pytest.raises(errors.MessageNotFound):
        tree.decide_move_head(state(uuid.uuid4(), 1, 1), None, uuid.uuid4())


def test_columns_round_trip_every_event_type():
    events = [
        MessageAppended(message_id=uuid.uuid4(), parent_id=None, role="system", content="s", depth=0,
                        body_sha256=body_digest("s"), metadata={"k": [1, "two"]}),
        HeadMoved(message_id=uuid.uuid4(), previous_id=None),
        *tree.create_conversation(
            tree.Create(conversation_id=CONV, family_id=FAMILY, title="t", metadata={"a": 1},
                        system=None, system_message_id=None)
        ),
    ]
    for event in events:
        # A message's text is its body, which the reader of a row passes in.
        content = event.content if isinstance(event, MessageAppended) else ""
        assert from_columns(to_columns(event), content) == event


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


def test_last_n_keeps_the_final_messages_and_every_system_message():
    path = [Utterance(role, str(i)) for i, role in enumerate(["system", "user", "assistant", "system", "user", "assistant"])]
    kept = last_messages(path, 2)
    assert kept == [path[0], path[3], path[4], path[5]]
    assert last_messages(path, None) == path
    assert last_messages(path, 100) == path


def fork_command(at):
    return tree.Fork(
        conversation_id=uuid.UUID(int=9), family_id=FAMILY, source_conversation_id=CONV,
        source_message_id=at, title="f", metadata={"k": 1},
    )


def test_a_fork_records_one_event_and_starts_at_its_base():
    base = uuid.uuid4()
    at = node(base, depth=4, has_children=True)
    events = tree.decide_fork(fork_command(base), at)
    [event] = events
    assert event == tree.ConversationForked(
        source_conversation_id=CONV, source_message_id=base, title="f", metadata={"k": 1}
    )
    s = tree.fold(tree.fork_origin(fork_command(base), at), events)
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
    base = node(uuid.uuid4(), depth=3, conversation=uuid.UUID(int=3))
    s = tree.fold(tree.fork_origin(fork_command(base.message_id), base), tree.decide_fork(fork_command(base.message_id), base))
    events = tree.decide_append(s, append(uuid.uuid4(), parent=inherited.message_id), inherited, None)
    after = tree.fold(tree.seen(s, inherited), events)
    assert (after.message_count, after.leaf_count) == (5, 2)
    assert events[0].depth == 2
    # Under the base itself, the fork's only leaf is replaced, not joined.
    events = tree.decide_append(s, append(uuid.uuid4(), parent=base.message_id), base, None)
    assert (tree.fold(s, events).message_count, tree.fold(s, events).leaf_count) == (5, 1)


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
    cmd = tree.Append(message_id=m, parent_id=None, role="user", content="4821", metadata={}, digest_key=KEY)
    [event] = tree.decide_append(state(), cmd, parent=None, existing=None)
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
    retry = tree.Append(message_id=m, parent_id=None, role="user", content="4821", metadata={}, digest_key=bytes(32))
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
