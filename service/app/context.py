"""Reading a conversation's shape: the context of a message, the whole tree, its leaves."""

from __future__ import annotations

import uuid

import msgspec

from service.app import replay
from service.app.caller import Caller
from service.domain import calls, views
from service.domain.errors import MessageNotFound
from service.domain.message import Utterance
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
    as_of: replay.AsOf | None = None,
) -> views.ServedContext:
    """The root-first path to `message_id` (default: the head), windowed to the `last` messages,
    now or as of a past event, as it is sent (a views.Context's JSON). One round trip for the path,
    however deep and through however many forks it runs; the plain messages on it, most of a deep
    path, are written out by the store and never built as views (BENCHMARKS.md, issue 14 goal 3)."""
    async with store.reader() as tx:
        conversation, scope = await replay.summary(tx, caller, conversation_id, as_of)
        leaf = message_id if message_id is not None else conversation.head_id
        path = await tx.served_path(scope, leaf) if leaf is not None else []
    if message_id is not None and not path:
        raise MessageNotFound(message_id=str(message_id))
    messages = last_messages(path, last)
    return views.ServedContext(
        conversation_id=conversation_id,
        leaf_id=leaf,
        depth=len(path),
        messages=[_raw(m) for m in messages],
        pending_tool_calls=_unanswered(messages),
    )


_encode = msgspec.json.encode
# What a written message is to calls.unanswered: a message that neither calls a tool nor answers
# one, as every message the store writes out is (views.Written).
_NO_CALLS = Utterance(role="user")


def _raw(message: views.Served) -> msgspec.Raw:
    return message.json if isinstance(message, views.Written) else msgspec.Raw(_encode(message))


def _unanswered(messages: list[views.Served]) -> list[str]:
    if all(isinstance(m, views.Written) for m in messages):
        return []  # no message calls a tool
    return calls.unanswered([m if isinstance(m, views.PathMessage) else _NO_CALLS for m in messages])


async def tree(
    store: Store, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
) -> Tree:
    """Every message the conversation shows (for a fork, its inherited path first), in the order written."""
    async with store.reader() as tx:
        conversation, scope = await replay.summary(tx, caller, conversation_id, as_of)
        messages = await tx.list_messages(scope)
    return Tree(conversation_id=conversation_id, head_id=conversation.head_id, messages=messages)


async def leaves(
    store: Store, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
) -> tuple[views.Conversation, list[views.Leaf]]:
    """The conversation's summary and its branch tips, read together so that they agree."""
    async with store.reader() as tx:
        conversation, scope = await replay.summary(tx, caller, conversation_id, as_of)
        return conversation, await tx.list_leaves(scope)
