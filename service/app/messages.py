"""Appending messages (to the head, or as a branch under any message) and moving the head."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.app.caller import Caller
from service.app.writes import write_events
from service.domain import tree, views
from service.domain.errors import ConversationNotFound, MessageNotFound, ParentStillGenerating
from service.domain.events import Role
from service.store import pending
from service.store.events import Store, Tx


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    role: Role
    content: str
    metadata: dict[str, Any] = {}
    expected_head: uuid.UUID | None = None


class Appended(msgspec.Struct, frozen=True):
    message: views.Message
    created: bool  # False: a retry that found the message it had appended


async def append(tx: Tx, caller: Caller, conversation_id: uuid.UUID, new: NewMessage) -> Appended:
    # One round trip: lock the conversation, draw a number, and read the parent (given, or the
    # head) and any message already carrying the client's id.
    given = [i for i in (new.parent_message_id, new.id) if i is not None]
    begun = await tx.begin_append(caller.tenant, conversation_id, 1, given, new.parent_message_id is None)
    if begun is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    state, now, seqs, nodes = begun
    cmd = tree.AppendMessage(
        message_id=new.id or uuid.uuid4(),
        parent_id=new.parent_message_id,
        role=new.role,
        content=new.content,
        metadata=new.metadata,
        expected_head=new.expected_head,
    )
    parent_ref = cmd.parent_id if cmd.parent_id is not None else state.head_id
    parent = nodes.get(parent_ref) if parent_ref is not None else None
    if parent is None and cmd.parent_id is not None and await pending.is_pending(tx, state.family_id, cmd.parent_id):
        # Checked only when the parent is missing: the hot path pays nothing for it.
        raise ParentStillGenerating(parent_message_id=str(cmd.parent_id))
    decision = tree.decide_append(state, cmd, parent, nodes.get(cmd.message_id) if new.id else None)
    if isinstance(decision, tree.AlreadyAppended):
        message = await tx.get_message(tree.scope(state), decision.node.message_id)
        assert message is not None
        return Appended(message, created=False)
    sealed = await write_events(tx, caller, state, decision, now, seqs, {cmd.message_id: cmd.content})
    event = decision.events[0]
    assert isinstance(event, tree.MessageAppended)
    return Appended(
        views.Message(
            id=cmd.message_id,
            conversation_id=conversation_id,
            parent_message_id=event.parent_id,
            role=cmd.role,
            content=cmd.content,
            metadata=cmd.metadata,
            depth=event.depth,
            seq=sealed[0].envelope.seq,
            created_at=now,
        ),
        created=True,
    )


async def move_head(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> views.Conversation:
    async with store.transaction() as tx:
        begun = await tx.begin_write(caller.tenant, conversation_id, 1)
        if begun is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        state, now, seqs = begun
        nodes = await tx.find_nodes(tree.scope(state), [message_id])
        decision = tree.decide_move_head(state, nodes.get(message_id), message_id)
        if decision.events:
            await write_events(tx, caller, state, decision, now, seqs, {})
        found = await tx.get_conversation(caller.tenant, conversation_id)
    assert found is not None
    return found[0]


async def get(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> views.Message:
    async with store.reader() as tx:
        scope = await _scope(tx, caller, conversation_id)
        message = await tx.get_message(scope, message_id)
    if message is None:
        raise MessageNotFound(message_id=str(message_id))
    return message


async def children(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> list[views.Message]:
    async with store.reader() as tx:
        scope = await _scope(tx, caller, conversation_id)
        parent = await tx.get_message(scope, message_id)
        if parent is None:
            raise MessageNotFound(message_id=str(message_id))
        return await tx.list_children(scope, parent)


async def _scope(tx: Tx, caller: Caller, conversation_id: uuid.UUID) -> tree.Scope:
    found = await tx.get_scoped(caller.tenant, conversation_id)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    return found[1]
