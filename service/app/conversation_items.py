"""The Conversations API's use cases: a conversation as the head path of a convtree conversation,
and its items (service/domain/items.py) read from and appended to that path.

Its projection leaves out what the API deleted, the log keeps all of it:
- a conversation deleted here has a tombstone (`conversation_deleted`): this API answers 404 for
  it from then on; the native API still serves it, whole (a body is erased only by a redaction
  that asks for it, `erase: true`);
- an item of the head message deleted here moves the head to the head's parent (the message stays,
  a branch the native tree shows); when the head message has other items (an assistant step's
  reasoning, text and calls), the message without that item is appended beside it instead, as the
  new head (unless what is left says nothing a message may say alone, such as a reasoning item:
  then the head moves to the parent too). A head with no parent is hidden instead;
- an item of a message further up the path is hidden (`message_hidden`): that message, all its
  items, is no longer listed here; the tree, the log and every native read keep it.

Each write takes the conversation's lock and writes through the write pipeline (writes.py); an
append of items is one transaction, all of them or none.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

from service.app import conversations, messages, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.domain import items as mapping
from service.domain import tree, views
from service.domain.errors import ConversationNotFound, InvalidMessage, ItemNotFound
from service.domain.events import (
    ConversationDeleted,
    ConversationUpdated,
    MessageHidden,
)
from service.domain.message import said
from service.store import marks
from service.store.events import Store, Tx

Order = Literal["asc", "desc"]


class ItemPage(msgspec.Struct, frozen=True):
    items: list[mapping.Item]
    has_more: bool


async def create(
    store: Store, caller: Caller, items: list[Any], metadata: dict[str, Any]
) -> views.Conversation:
    """A new conversation with `items`, in one transaction."""
    said_items = mapping.items_to_messages(items)
    conversation_id = new_id()
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        await conversations.create(tx, caller, conversations.NewConversation(id=conversation_id, metadata=metadata))
        for message in said_items:
            await messages.append(tx, caller, conversation_id, messages.NewMessage(**said(message)))
        return await _summary(tx, caller, conversation_id)


async def get(store: Store, caller: Caller, conversation_id: uuid.UUID) -> views.Conversation:
    async with store.reader() as tx:
        await _not_deleted(tx, caller, conversation_id)
        return await _summary(tx, caller, conversation_id)


async def update(
    store: Store, caller: Caller, conversation_id: uuid.UUID, metadata: dict[str, Any]
) -> views.Conversation:
    """Set the conversation's metadata: a `conversation_updated` event, and its summary row."""
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        w = await writes.lock(tx, caller, conversation_id)
        await _not_deleted(tx, caller, conversation_id)
        await w.write([ConversationUpdated(metadata=metadata)])
        await marks.set_metadata(tx, caller.tenant, conversation_id, metadata)
        return await _summary(tx, caller, conversation_id)


async def delete(store: Store, caller: Caller, conversation_id: uuid.UUID) -> None:
    """The conversation's tombstone (see the module's docstring)."""
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        w = await writes.lock(tx, caller, conversation_id)
        await _not_deleted(tx, caller, conversation_id)
        await w.write([ConversationDeleted()])


async def list_items(
    store: Store, caller: Caller, conversation_id: uuid.UUID, after: str | None, limit: int, order: Order
) -> ItemPage:
    """A page of the conversation's items in `order` (oldest first: asc), after the item `after`."""
    async with store.reader() as tx:
        listed = await _items(tx, caller, conversation_id)
    if order == "desc":
        listed.reverse()
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(listed) if item["id"] == after), -1)
        if start < 0:
            raise ItemNotFound(item_id=after)
    return ItemPage(listed[start : start + limit], has_more=start + limit < len(listed))


async def add_items(store: Store, caller: Caller, conversation_id: uuid.UUID, items: list[Any]) -> list[mapping.Item]:
    """Append `items` under the head, in order, in one transaction; the items they became."""
    said_items = mapping.items_to_messages(items)
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        await _not_deleted(tx, caller, conversation_id)
        appended = [
            (await messages.append(tx, caller, conversation_id, messages.NewMessage(**said(m)))).message
            for m in said_items
        ]
    return mapping.messages_to_items(appended)


async def get_item(store: Store, caller: Caller, conversation_id: uuid.UUID, item_id: str) -> mapping.Item:
    async with store.reader() as tx:
        listed = await _items(tx, caller, conversation_id)
    found = next((item for item in listed if item["id"] == item_id), None)
    if found is None:
        raise ItemNotFound(item_id=item_id)
    return found


async def delete_item(store: Store, caller: Caller, conversation_id: uuid.UUID, item_id: str) -> views.Conversation:
    """Delete an item from the conversation's items (see the module's docstring)."""
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        w = await writes.lock(tx, caller, conversation_id)
        path = await _path(tx, caller, conversation_id, w.scope, w.state.head_id)
        listed = mapping.messages_to_items(path)
        ref = mapping.parse_item_id(item_id)
        if ref is None or all(item["id"] != item_id for item in listed):
            raise ItemNotFound(item_id=item_id)
        message = next(m for m in path if m.id == ref.message_id)
        if message.id != w.state.head_id:
            await w.write([MessageHidden(message_id=message.id)])
        else:
            await _delete_from_head(tx, caller, w, message, item_id)
        return await _summary(tx, caller, conversation_id)


async def _delete_from_head(tx: Tx, caller: Caller, w: writes.Locked, head: views.PathMessage, item_id: str) -> None:
    parent = head.parent_message_id
    if parent is None:
        await w.write([MessageHidden(message_id=head.id)])
        return
    rest = [item for item in mapping.message_items(head.id, head) if item["id"] != item_id]
    try:
        left = mapping.items_to_messages(rest) if rest else []
    except InvalidMessage:
        left = []  # what is left says nothing a message may say alone: the whole step goes
    if len(left) != 1:
        nodes = await tx.find_nodes(w.scope, [parent])
        await w.write(tree.decide_move_head(w.state, nodes.get(parent), parent))
        return
    beside = messages.NewMessage(
        **{**said(left[0]), "metadata": head.metadata, "name": head.name}, parent_message_id=parent
    )
    await messages.append(tx, caller, w.state.conversation_id, beside)


async def _items(tx: Tx, caller: Caller, conversation_id: uuid.UUID) -> list[mapping.Item]:
    found = await tx.get_scoped(caller.tenant, conversation_id)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    conversation, scope = found
    return mapping.messages_to_items(await _path(tx, caller, conversation_id, scope, conversation.head_id))


async def _path(
    tx: Tx, caller: Caller, conversation_id: uuid.UUID, scope: tree.Scope, head_id: uuid.UUID | None
) -> list[views.PathMessage]:
    """The head path as this API shows it: without hidden messages; ConversationNotFound for a
    conversation deleted here."""
    marked = await marks.marks(tx, caller.tenant, conversation_id)
    if marked.deleted:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    path = await tx.message_path(scope, head_id) if head_id is not None else []
    return [m for m in path if m.id not in marked.hidden]


async def _not_deleted(tx: Tx, caller: Caller, conversation_id: uuid.UUID) -> None:
    if (await marks.marks(tx, caller.tenant, conversation_id)).deleted:
        raise ConversationNotFound(conversation_id=str(conversation_id))


async def _summary(tx: Tx, caller: Caller, conversation_id: uuid.UUID) -> views.Conversation:
    found = await tx.get_conversation(caller.tenant, conversation_id)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    return found[0]
