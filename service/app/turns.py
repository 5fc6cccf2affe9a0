"""Turns: record the user's message and launch the model call (its outcome: service/app/outcomes.py).

A turn takes two transactions, never one held open while the model talks. The first records the
user message, reads its context (in one round trip, under the conversation's lock), and registers
the reply as pending (`pending_replies`) under an id chosen up front; the model call is launched
from inside it as soon as the context is known, and counts once it commits (service/app/opening.py).
The second, when the model is done, records the reply (head moves to it) or a `turn_failed` event,
and removes the pending row. Every turn ends in exactly one of the two, even if its process dies
(outcomes.close_expired).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from service.app import idempotency
from service.app.caller import Caller
from service.app.opening import (
    Answered,
    InFlight,
    L,
    Opening,
    Params as Params,  # re-exported: the API's turn bodies take it from here
    Plan,
    ReplySpec,
    opened,
    visible,
)
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import (
    ConversationNotFound,
    InvalidRequest,
    MessageNotFound,
    ReplyInProgress,
)
from service.app.writes import new_digest_key
from service.domain.message import ContextItem, context_item
from service.store import pending
from service.store.events import Store, Tx
from service.upstream import Provider, Registry


class NewTurn(msgspec.Struct, frozen=True, kw_only=True):
    content: str
    id: uuid.UUID | None = None  # the user message's id: a retry with the same id is safe
    parent_message_id: uuid.UUID | None = None  # None: under the head
    metadata: dict[str, Any] = {}
    reply: ReplySpec = msgspec.field(default_factory=ReplySpec)
    keyed: idempotency.Keyed | None = None


async def begin_turn(
    store: Store,
    registry: Registry,
    caller: Caller,
    owner: uuid.UUID,
    conversation_id: uuid.UUID,
    new: NewTurn,
    launch: Callable[[Plan], L],
) -> L | Answered:
    """Record the user message under its parent (default: the head) and launch the reply to it.

    With a client id a retry is safe: if the message exists, the retry gets its reply, or 409
    while that is being generated, or, if the turn failed, a new attempt at the reply; the message
    is never recorded twice. An Idempotency-Key does the same (see `again`), waiting for a reply
    still being generated instead of the 409.
    """
    provider, model = registry.resolve(new.reply.provider, new.reply.model)

    async def work(o: Opening[L]) -> Answered | None:
        tx = o.tx
        began = await o.claim()
        if began is not None:
            return await again(o, began, provider, model, new.reply)
        message_id = new.id
        if new.keyed is not None:
            message_id = message_id or idempotency.derived_id(caller, new.keyed)
        retry = message_id is not None
        message_id = message_id or uuid.uuid4()
        # One round trip: the lock, a number, the parent (given, or the head) and a retry's message.
        given = [i for i in (new.parent_message_id, message_id if retry else None) if i is not None]
        begun = await tx.begin_append(caller.tenant, conversation_id, 1, given, new.parent_message_id is None)
        if begun is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        state, now, seqs, nodes = begun
        scope = tree.scope(state)
        parent_ref = new.parent_message_id or state.head_id
        cmd = tree.Append(
            message_id=message_id,
            parent_id=new.parent_message_id,
            role="user",
            content=new.content,
            metadata=new.metadata,
            digest_key=new_digest_key(),
        )
        existing = nodes.get(message_id) if retry else None
        if existing is not None:
            return await _resume(o, state, cmd, existing, provider, model, new.reply)
        parent = nodes.get(parent_ref) if parent_ref is not None else None
        explicit = new.parent_message_id is not None
        if not visible(parent_ref, parent):  # a reply still being generated: 409 (else decide_chain's 404)
            await o.register_under(state, message_id, provider, model, parent_ref, explicit)
        state = tree.seen(state, parent)
        appended = rules.decide_chain(state, parent, [cmd])
        user = views.message_of(appended[0], conversation_id, seqs[0], now)
        items = [*await path_context(tx, scope, parent), context_item(message_id, appended[0])]
        await o.reply(conversation_id, state.family_id, user, items, provider, model, new.reply)
        bodies = {message_id: new.content}
        await o.write_under(state, [*appended], now, seqs, bodies, provider, model, parent_ref, explicit)
        return None

    return await opened(store, caller, owner, launch, work, new.keyed, conversation_id)


async def begin_regenerate(
    store: Store,
    registry: Registry,
    caller: Caller,
    owner: uuid.UUID,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    spec: ReplySpec,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None = None,
) -> L | Answered:
    """Launch another reply to the message an assistant reply answered: a sibling, i.e. a new branch."""
    provider, model = registry.resolve(spec.provider, spec.model)

    async def work(o: Opening[L]) -> Answered | None:
        began = await o.claim()
        if began is not None:
            return await again(o, began, provider, model, spec)
        begun = await o.tx.begin_write(caller.tenant, conversation_id, 0)
        if begun is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        state, _, _ = begun
        scope = tree.scope(state)
        node = (await o.tx.find_nodes(scope, [message_id])).get(message_id)
        if node is None or not node.visible:
            raise MessageNotFound(message_id=str(message_id))
        if node.role != "assistant" or node.parent_id is None:
            raise InvalidRequest(
                "Only an assistant reply can be regenerated; to edit a user message, send a turn "
                "with parent_message_id set to that message's parent.",
                message_id=str(message_id),
                role=node.role,
            )
        path = await o.tx.message_path(scope, node.parent_id)
        user = _plain(path[-1])
        await o.reply(conversation_id, state.family_id, user, context_items(path), provider, model, spec)
        await o.register(state.family_id, conversation_id, node.parent_id, provider, model, None)
        return None

    return await opened(store, caller, owner, launch, work, keyed, conversation_id)


async def again(
    o: Opening[L], began: idempotency.Launched, provider: Provider, model: str, spec: ReplySpec
) -> Answered | None:
    """A retry, by Idempotency-Key, of a turn that was taken: its reply as the log holds it; while
    that is being generated, InFlight (opening.opened waits, then asks again); if it failed (or its
    server died), a new attempt at it, which the key names from then on. Never a second user
    message, never a second model call while one runs."""
    begun = await o.tx.begin_write(o.caller.tenant, began.conversation_id, 0)
    assert begun is not None, "conversations are never removed"
    state, _, _ = begun
    scope = tree.scope(state)
    user = await o.tx.get_message(scope, began.user_message_id)
    assert user is not None, "the message a turn answers stays visible where the turn was taken"
    reply = await o.tx.get_message(scope, began.reply_id)
    if reply is not None:
        return Answered(state.conversation_id, user, reply, by_key=True)
    if await pending.is_pending(o.tx, state.family_id, began.reply_id):
        raise InFlight(state.family_id, began.reply_id)
    await o.register(state.family_id, state.conversation_id, user.id, provider, model, None)
    path = await o.tx.message_path(scope, user.id)
    await o.reply(state.conversation_id, state.family_id, user, context_items(path), provider, model, spec)
    return None


async def _resume(
    o: Opening[L],
    state: tree.ConversationState,
    cmd: tree.Append,
    existing: tree.Node,
    provider: Provider,
    model: str,
    spec: ReplySpec,
) -> Answered | None:
    """A retry of a turn whose user message exists: its reply, or 409 while pending, or a new attempt."""
    tree.decide_append(state, cmd, None, existing)  # raises MessageIdConflict unless it is the same message
    scope = tree.scope(state)
    user = await o.tx.get_message(scope, existing.message_id)
    assert user is not None  # decide_append checked it is this conversation's
    replies = [m for m in await o.tx.list_children(scope, user) if m.role == "assistant"]
    if replies:
        return Answered(state.conversation_id, user, replies[0])
    around = await o.register(state.family_id, state.conversation_id, user.id, provider, model, user.id)
    for reply_id, user_message_id in around:
        if user_message_id == user.id:
            raise ReplyInProgress(message_id=str(user.id), reply_id=str(reply_id))
    path = await o.tx.message_path(scope, existing.message_id)
    await o.reply(state.conversation_id, state.family_id, user, context_items(path), provider, model, spec)
    return None


async def path_context(tx: Tx, scope: tree.Scope, parent: tree.Node | None) -> list[ContextItem]:
    """The context a new message under `parent` (one the conversation sees; None: the first
    message) is sent with, up to the parent, in one round trip."""
    if parent is None:
        return []
    return context_items(await tx.message_path(scope, parent.message_id))


def context_items(path: list[views.PathMessage]) -> list[ContextItem]:
    # A redacted message's text is withheld from every read, and so from the model too.
    return [context_item(m.id, m) for m in path]


def _plain(message: views.PathMessage) -> views.Message:
    return views.Message(**{f: getattr(message, f) for f in views.Message.__struct_fields__})
