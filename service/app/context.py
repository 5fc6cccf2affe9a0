"""Reading a conversation's shape: the context of a message, the whole tree, its leaves."""

from __future__ import annotations

import uuid

import msgspec

from service.app.caller import Caller
from service.domain import views
from service.domain.errors import ConversationNotFound, MessageNotFound
from service.domain.window import last_messages
from service.store.events import Store


class Tree(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    head_id: uuid.UUID | None
    messages: list[views.Message]


async def context(
    store: Store,
    caller: Caller,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID | None,
    last: int | None,
) -> views.Context:
    """The root-first path to `message_id` (default: the head), windowed to the `last` messages."""
    async with store.reader() as tx:
        found = await tx.get_conversation(caller.tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        conversation, family_id = found
        leaf = message_id if message_id is not None else conversation.head_id
        path = await tx.message_path(family_id, conversation_id, leaf) if leaf is not None else []
    if message_id is not None and (not path or path[-1].conversation_id != conversation_id):
        raise MessageNotFound(message_id=str(message_id))
    return views.Context(
        conversation_id=conversation_id,
        leaf_id=leaf,
        depth=len(path),
        messages=last_messages(path, last),
    )


async def tree(store: Store, caller: Caller, conversation_id: uuid.UUID) -> Tree:
    async with store.reader() as tx:
        found = await tx.get_conversation(caller.tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        messages = await tx.list_messages(conversation_id)
    return Tree(conversation_id=conversation_id, head_id=found[0].head_id, messages=messages)


async def leaves(store: Store, caller: Caller, conversation_id: uuid.UUID) -> list[views.Leaf]:
    async with store.reader() as tx:
        if await tx.get_conversation(caller.tenant, conversation_id) is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        return await tx.list_leaves(conversation_id)
