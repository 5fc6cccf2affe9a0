"""Creating, reading and listing conversations."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.app import idempotency, replay, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.domain import tree, views
from service.domain.errors import ConversationIdConflict, InvalidRequest
from service.domain.events import MAX_SEQ, body_digest
from service.store.events import Store, Tx


class NewConversation(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID | None = None
    title: str | None = None
    metadata: dict[str, Any] = {}
    system: str | None = None


class Created(msgspec.Struct, frozen=True):
    conversation: views.Conversation
    created: bool  # False: a retry that found the conversation it had created


class Page(msgspec.Struct, frozen=True):
    items: list[views.Conversation]
    next_cursor: str | None


async def create_conversation(
    store: Store, caller: Caller, new: NewConversation, keyed: idempotency.Keyed | None = None
) -> Created | idempotency.Replayed:
    """Create a conversation, once per Idempotency-Key (a retry gets the stored answer)."""
    return await idempotency.run(store, caller, keyed, lambda tx: create(tx, caller, new), answer)


def answer(created: Created) -> tuple[int, views.Conversation]:
    """The answer kept under an Idempotency-Key: the conversation made, or the one a retry found."""
    return idempotency.creation(created.created, created.conversation)


async def create(tx: Tx, caller: Caller, new: NewConversation) -> Created:
    conversation_id = new.id or new_id()
    cmd = tree.Create(
        conversation_id=conversation_id,
        family_id=new_id(),
        title=new.title,
        metadata=new.metadata,
        system=new.system,
        system_message_id=new_id() if new.system is not None else None,
        system_digest_key=writes.new_digest_key() if new.system is not None else None,
    )
    events = tree.create_conversation(cmd)
    w = await writes.lock_new(tx, caller, conversation_id, len(events))
    if new.id is not None:
        found = await tx.get_conversation(caller.tenant, conversation_id)
        if found is not None:
            await _check_same(tx, found[0], found[1], new)
            return Created(found[0], created=False)
    state = await w.create(tree.initial_state(cmd), events, new.title, new.metadata)
    return Created(new_summary(state, new.title, new.metadata, w.now), created=True)


def new_summary(
    state: tree.ConversationState,
    title: str | None,
    metadata: dict[str, Any],
    now: datetime,
    forked_from: views.ForkedFrom | None = None,
) -> views.Conversation:
    """The summary of a conversation that was created (or forked) just now."""
    return views.Conversation(
        id=state.conversation_id,
        title=title,
        metadata=metadata,
        head_id=state.head_id,
        message_count=state.message_count,
        leaf_count=state.leaf_count,
        created_at=now,
        updated_at=now,
        last_seq=state.last_seq,
        forked_from=forked_from,
    )


async def _check_same(tx: Tx, found: views.Conversation, family_id: uuid.UUID, new: NewConversation) -> None:
    root = await tx.find_root(family_id)
    same_system = (
        root is None
        if new.system is None
        else root is not None and root[1] == "system" and root[2] == body_digest(new.system, root[3])
    )
    if found.title != new.title or found.metadata != new.metadata or not same_system:
        raise ConversationIdConflict(conversation_id=str(found.id))


async def get(
    store: Store, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
) -> views.Conversation:
    """The summary now or, with `as_of`, as it stood after that event (folded from the log)."""
    async with store.reader() as tx:
        conversation, _ = await replay.summary(tx, caller, conversation_id, as_of)
    return conversation


async def list_page(store: Store, caller: Caller, limit: int, cursor: str | None) -> Page:
    """Newest first. The cursor is opaque to callers: it encodes where the last page stopped."""
    before = _decode_cursor(cursor) if cursor else None
    async with store.reader() as tx:
        rows = await tx.list_conversations(caller.tenant, before, limit + 1)
    items = [c for c, _ in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1][1]) if len(rows) > limit else None
    return Page(items, next_cursor)


def _encode_cursor(created_seq: int) -> str:
    return base64.urlsafe_b64encode(f"c1:{created_seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = text.partition(":")
        if version != "c1" or not value.isascii() or not value.isdigit() or int(value) > MAX_SEQ:
            raise ValueError(version)
        return int(value)
    except ValueError as exc:
        raise InvalidRequest("The cursor is not one this service issued.", parameter="cursor") from exc
