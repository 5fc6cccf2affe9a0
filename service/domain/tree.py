"""Tree rules: what an append, a branch or a head move means for a conversation, as pure decisions."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.domain.errors import MessageIdConflict, MessageNotFound, ParentNotFound, StaleHead
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    ConversationForked,
    Event,
    HeadMoved,
    MessageAppended,
    Sealed,
    body_digest,
    encode_message_payload,
    said_beside_body,
)
from service.domain.message import Utterance, said
from service.domain.stored import stored


class ConversationState(msgspec.Struct, frozen=True, kw_only=True):
    """The derived summary row of one conversation: what every decision about it needs."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    last_seq: int
    last_hash: bytes
    # A fork's base: the message it was forked at (its inherited path is root→base), and its depth.
    base_id: uuid.UUID | None = None
    base_depth: int | None = None
    # Messages known to be leaves of the conversation: every one, in a fold of the whole log; in a
    # state read from the summary row, those a decision was shown (seen). evolve needs them to count
    # leaves: a child of a known leaf replaces it as a tip, a child of any other message adds one.
    tips: frozenset[uuid.UUID] = frozenset()


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """Which messages a conversation shows: its own, written up to event `upto`, and, for a fork,
    the path root→`base_id` it inherited (`base_depth` deep), all of which is older than the fork.

    Reading with `upto` = the conversation's `last_seq` shows its current state consistently with
    its summary; an earlier `upto` shows a past state (replay).
    """

    family_id: uuid.UUID
    conversation_id: uuid.UUID
    base_id: uuid.UUID | None
    base_depth: int | None
    upto: int


def scope(state: ConversationState) -> Scope:
    """What a conversation shows right now, seen from its locked summary."""
    return Scope(
        family_id=state.family_id,
        conversation_id=state.conversation_id,
        base_id=state.base_id,
        base_depth=state.base_depth,
        upto=state.last_seq,
    )


def sibling_place(
    place: tuple[int, int], mine: bool, message_id: uuid.UUID, seq: int, others: dict[uuid.UUID, int]
) -> tuple[int, int]:
    """A path message's (sibling count, position) once its parent's children of the conversation's
    own that are off the path (`others`: their ids and sequence numbers) are counted too.

    `place` is where it stands without them (message_path): after the inherited child when its
    parent is inherited and above the fork's base, first of the conversation's own children if it
    is one of them (`mine`). Own children count in the order written.
    """
    count, position = place
    inherited = count - mine
    children = others if not mine else {**others, message_id: seq}
    if not mine:
        return inherited + len(children), position
    return inherited + len(children), inherited + sum(1 for s in children.values() if s <= seq)


class Node(msgspec.Struct, frozen=True, kw_only=True):
    """A message as a decision sees it: its place in the tree and what its event records, not its text."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    depth: int
    body_sha256: bytes
    metadata: dict[str, Any]
    has_children: bool  # has at least one child visible in the conversation being decided on
    # Visible in the conversation being decided on: its own, or on the path a fork inherited. The
    # store also finds messages that are not (to recognise a message id already used in the family).
    visible: bool = True
    digest_key: bytes | None = None  # its body's digest key (None: erased, or an unkeyed digest)
    payload: str = '{"metadata":{}}'  # its event's payload (what it says besides its body)


class Create(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    family_id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]
    system: str | None
    system_message_id: uuid.UUID | None
    system_digest_key: bytes | None = None  # the key of the system prompt's body digest


class Append(Utterance, frozen=True, kw_only=True):
    """Append a message (what it says, and under which parent) to a conversation."""

    message_id: uuid.UUID
    parent_id: uuid.UUID | None  # None: attach to the head
    expected_head: uuid.UUID | None = None  # set: refuse unless the head is still this message
    digest_key: bytes | None = None  # the key of the body's digest (events.body_digest), chosen by the caller


class Fork(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    family_id: uuid.UUID  # the source's: a fork references the source's path, in the same family
    source_conversation_id: uuid.UUID
    source_message_id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]


class AlreadyAppended(msgspec.Struct, frozen=True):
    """A retry of an append that already happened: answer with the original, record nothing."""

    node: Node


# --- evolve: the one owner of a conversation's summary ---------------------------------------------


def evolve(state: ConversationState, event: Event) -> ConversationState:
    """The conversation after `event`. The same rules, over a whole log, are SQL's fold_conversations
    (schema/schema.sql), which rebuilds and replays summaries; tests/integration/test_domain_fold.py
    checks the two agree. The chain (last_seq, last_hash) is not the event's: see `chained`."""
    match event:
        case MessageAppended(message_id=message_id, parent_id=parent_id):
            # A new child of a leaf replaces that leaf as a tip; a child of an inner message adds a tip.
            adds_leaf = parent_id is None or parent_id not in state.tips
            return msgspec.structs.replace(
                state,
                head_id=message_id,
                message_count=state.message_count + 1,
                leaf_count=state.leaf_count + (1 if adds_leaf else 0),
                tips=(state.tips - {parent_id}) | {message_id},
            )
        case HeadMoved(message_id=message_id):
            return msgspec.structs.replace(state, head_id=message_id)
        case ConversationForked(source_message_id=base_id):
            # A fork sees the path root→base, whose messages it counts, with the base as its head
            # and only leaf (every message above the base has a visible child, the next on the path).
            assert state.base_id == base_id and state.base_depth is not None, "a fork starts from fork_origin"
            return msgspec.structs.replace(
                state, head_id=base_id, message_count=state.base_depth + 1, leaf_count=1, tips=frozenset({base_id})
            )
    return state  # created, redacted, failed: the tree is as it was


def fold(state: ConversationState, events: list[Event] | list[MessageAppended]) -> ConversationState:
    """The conversation after `events`, in order."""
    for event in events:
        state = evolve(state, event)
    return state


def seen(state: ConversationState, *nodes: Node | None) -> ConversationState:
    """`state` knowing which of `nodes` (messages a decision is shown, as the store found them) are
    leaves of the conversation, so that evolve counts a child of theirs right."""
    tips = state.tips
    for node in nodes:
        if node is None or not node.visible:
            continue
        tips = tips - {node.message_id} if node.has_children else tips | {node.message_id}
    return state if tips == state.tips else msgspec.structs.replace(state, tips=tips)


def initial_state(cmd: Create | Fork) -> ConversationState:
    """A conversation before its first event."""
    return ConversationState(
        conversation_id=cmd.conversation_id,
        family_id=cmd.family_id,
        head_id=None,
        message_count=0,
        leaf_count=0,
        last_seq=0,
        last_hash=GENESIS_HASH,
    )


def fork_origin(cmd: Fork, base: Node) -> ConversationState:
    """A fork before its first event: it knows the message it branches from, and how deep that is."""
    return msgspec.structs.replace(initial_state(cmd), base_id=base.message_id, base_depth=base.depth)


# --- decisions: a command and what the store found, to events --------------------------------------


def create_conversation(cmd: Create) -> list[Event]:
    events: list[Event] = [ConversationCreated(title=cmd.title, metadata=cmd.metadata)]
    if cmd.system is not None:
        assert cmd.system_message_id is not None
        events.append(
            MessageAppended(
                message_id=cmd.system_message_id,
                parent_id=None,
                role="system",
                content=cmd.system,
                depth=0,
                body_sha256=body_digest(cmd.system, cmd.system_digest_key),
                digest_key=cmd.system_digest_key,
            )
        )
    return events


def decide_append(
    state: ConversationState, cmd: Append, parent: Node | None, existing: Node | None
) -> list[Event] | AlreadyAppended:
    """Append `cmd` under `parent` (the message `cmd.parent_id` or, without it, the head names).

    `parent` is None (or not `visible`) when that message is not visible in the conversation;
    `existing` is the message that already carries `cmd.message_id` anywhere in the conversation's
    family, if one does.
    """
    if existing is not None:
        return _retry(state, cmd, existing)
    if parent is not None and not parent.visible:
        parent = None
    if cmd.expected_head is not None and cmd.expected_head != state.head_id:
        raise StaleHead(
            "The conversation's head is no longer the expected message.",
            expected=str(cmd.expected_head),
            head=None if state.head_id is None else str(state.head_id),
        )
    parent_ref = cmd.parent_id if cmd.parent_id is not None else state.head_id
    if parent_ref is not None and parent is None:
        raise ParentNotFound(parent_message_id=str(parent_ref))
    return [appended(cmd, parent_ref, 0 if parent is None else parent.depth + 1)]


def appended(cmd: Append, parent_id: uuid.UUID | None, depth: int) -> MessageAppended:
    """The event of `cmd`, placed under `parent_id` at `depth`: the command's Utterance, as it was given."""
    return MessageAppended(
        **said(cmd),
        message_id=cmd.message_id,
        parent_id=parent_id,
        depth=depth,
        body_sha256=body_digest(stored(cmd).text, cmd.digest_key),
        digest_key=cmd.digest_key,
    )


def _retry(state: ConversationState, cmd: Append, existing: Node) -> AlreadyAppended:
    same = (
        existing.conversation_id == state.conversation_id
        and existing.role == cmd.role
        and existing.body_sha256 == body_digest(stored(cmd).text, existing.digest_key)
        and said_beside_body(payload=existing.payload) == said_beside_body(cmd)
        and (cmd.parent_id is None or cmd.parent_id == existing.parent_id)
    )
    if not same:
        raise MessageIdConflict(message_id=str(cmd.message_id))
    return AlreadyAppended(existing)


def decide_fork(cmd: Fork, base: Node | None) -> list[Event]:
    """Fork at `base`, the message `cmd.source_message_id` as the source sees it: one event, nothing
    copied (its state: fold(fork_origin(cmd, base), events))."""
    if base is None or not base.visible:
        raise MessageNotFound(message_id=str(cmd.source_message_id))
    return [
        ConversationForked(
            source_conversation_id=cmd.source_conversation_id,
            source_message_id=base.message_id,
            title=cmd.title,
            metadata=cmd.metadata,
        )
    ]


def decide_move_head(state: ConversationState, target: Node | None, target_id: uuid.UUID) -> list[Event]:
    """Move the head to a visible message; moving it where it already is records nothing."""
    if target is None or not target.visible:
        raise MessageNotFound(message_id=str(target_id))
    if state.head_id == target.message_id:
        return []
    return [HeadMoved(message_id=target.message_id, previous_id=state.head_id)]


def appended_node(event: MessageAppended, conversation_id: uuid.UUID) -> Node:
    """The message an append just wrote, as the next decision in the same conversation sees it."""
    return Node(
        message_id=event.message_id,
        conversation_id=conversation_id,
        parent_id=event.parent_id,
        role=event.role,
        depth=event.depth,
        body_sha256=event.body_sha256,
        metadata=event.metadata,
        has_children=False,
        digest_key=event.digest_key,
        payload=encode_message_payload(event),
    )


def chained(state: ConversationState, sealed: list[Sealed]) -> ConversationState:
    """The state after its new events took their place in the log."""
    if not sealed:
        return state
    return msgspec.structs.replace(state, last_seq=sealed[-1].envelope.seq, last_hash=sealed[-1].hash)
