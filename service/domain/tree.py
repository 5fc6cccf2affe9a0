"""Tree rules: what an append, a branch or a head move means for a conversation, as pure decisions."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.domain.errors import HeadMoved as HeadMovedError
from service.domain.errors import MessageIdConflict, MessageNotFound, ParentNotFound
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    ConversationForked,
    Event,
    HeadMoved,
    MessageAppended,
    Role,
    Sealed,
    body_digest,
)


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
    """A message as a decision sees it: its place in the tree, not its content."""

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


class CreateConversation(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    family_id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]
    system: str | None
    system_message_id: uuid.UUID | None
    system_digest_key: bytes | None = None  # the key of the system prompt's body digest


class AppendMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: uuid.UUID
    parent_id: uuid.UUID | None  # None: attach to the head
    role: Role
    content: str
    metadata: dict[str, Any]
    expected_head: uuid.UUID | None = None  # set: refuse unless the head is still this message
    digest_key: bytes | None = None  # the key of the body's digest (events.body_digest), chosen by the caller


class ForkConversation(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    family_id: uuid.UUID  # the source's: a fork references the source's path, in the same family
    source_conversation_id: uuid.UUID
    source_message_id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]


class Decision(msgspec.Struct, frozen=True):
    events: list[Event]
    state: ConversationState


class AlreadyAppended(msgspec.Struct, frozen=True):
    """A retry of an append that already happened: answer with the original, record nothing."""

    node: Node


def create_conversation(cmd: CreateConversation) -> list[Event]:
    events: list[Event] = [ConversationCreated(title=cmd.title, metadata=cmd.metadata)]
    if cmd.system is not None:
        assert cmd.system_message_id is not None
        events.append(
            MessageAppended(
                message_id=cmd.system_message_id,
                parent_id=None,
                role="system",
                depth=0,
                body_sha256=body_digest(cmd.system, cmd.system_digest_key),
                digest_key=cmd.system_digest_key,
            )
        )
    return events


def initial_state(cmd: CreateConversation) -> ConversationState:
    return ConversationState(
        conversation_id=cmd.conversation_id,
        family_id=cmd.family_id,
        head_id=None,
        message_count=0,
        leaf_count=0,
        last_seq=0,
        last_hash=GENESIS_HASH,
    )


def decide_append(
    state: ConversationState, cmd: AppendMessage, parent: Node | None, existing: Node | None
) -> Decision | AlreadyAppended:
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
        raise HeadMovedError(
            "The conversation's head is no longer the expected message.",
            expected=str(cmd.expected_head),
            head=None if state.head_id is None else str(state.head_id),
        )
    parent_ref = cmd.parent_id if cmd.parent_id is not None else state.head_id
    if parent_ref is not None and parent is None:
        raise ParentNotFound(parent_message_id=str(parent_ref))
    event = MessageAppended(
        message_id=cmd.message_id,
        parent_id=parent_ref,
        role=cmd.role,
        depth=0 if parent is None else parent.depth + 1,
        body_sha256=body_digest(cmd.content, cmd.digest_key),
        metadata=cmd.metadata,
        digest_key=cmd.digest_key,
    )
    # A new child of a leaf replaces that leaf as a tip; a child of an inner message adds a tip.
    adds_leaf = parent is None or parent.has_children
    new_state = msgspec.structs.replace(
        state,
        head_id=cmd.message_id,
        message_count=state.message_count + 1,
        leaf_count=state.leaf_count + (1 if adds_leaf else 0),
    )
    return Decision([event], new_state)


def _retry(state: ConversationState, cmd: AppendMessage, existing: Node) -> AlreadyAppended:
    same = (
        existing.conversation_id == state.conversation_id
        and existing.role == cmd.role
        and existing.body_sha256 == body_digest(cmd.content, existing.digest_key)
        and existing.metadata == cmd.metadata
        and (cmd.parent_id is None or cmd.parent_id == existing.parent_id)
    )
    if not same:
        raise MessageIdConflict(message_id=str(cmd.message_id))
    return AlreadyAppended(existing)


def decide_fork(cmd: ForkConversation, base: Node | None) -> Decision:
    """Fork at `base`, the message `cmd.source_message_id` as the source sees it.

    The fork records one event and copies nothing: it sees the path root→base, whose messages it
    counts, with the base as its head and only leaf (every message above the base has a visible
    child, the next one on the path).
    """
    if base is None or not base.visible:
        raise MessageNotFound(message_id=str(cmd.source_message_id))
    event = ConversationForked(
        source_conversation_id=cmd.source_conversation_id,
        source_message_id=base.message_id,
        title=cmd.title,
        metadata=cmd.metadata,
    )
    state = ConversationState(
        conversation_id=cmd.conversation_id,
        family_id=cmd.family_id,
        head_id=base.message_id,
        message_count=base.depth + 1,
        leaf_count=1,
        last_seq=0,
        last_hash=GENESIS_HASH,
        base_id=base.message_id,
        base_depth=base.depth,
    )
    return Decision([event], state)


def decide_move_head(state: ConversationState, target: Node | None, target_id: uuid.UUID) -> Decision:
    """Move the head to a visible message; moving it where it already is records nothing."""
    if target is None or not target.visible:
        raise MessageNotFound(message_id=str(target_id))
    if state.head_id == target.message_id:
        return Decision([], state)
    event = HeadMoved(message_id=target.message_id, previous_id=state.head_id)
    return Decision([event], msgspec.structs.replace(state, head_id=target.message_id))


def created_state(cmd: CreateConversation, events: list[Event]) -> ConversationState:
    """The summary of a conversation right after its creation events."""
    state = initial_state(cmd)
    if cmd.system is not None:
        state = msgspec.structs.replace(state, head_id=cmd.system_message_id, message_count=1, leaf_count=1)
    return state


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
    )


def chained(state: ConversationState, sealed: list[Sealed]) -> ConversationState:
    """The state after its new events took their place in the log."""
    if not sealed:
        return state
    return msgspec.structs.replace(state, last_seq=sealed[-1].envelope.seq, last_hash=sealed[-1].hash)
