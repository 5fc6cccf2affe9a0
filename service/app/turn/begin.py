"""Beginning a turn: record the user's message and launch the model call (its outcome: record.py).

A turn takes two transactions, never one held open while the model talks. The first records the
user message, reads its context (in one round trip, under the conversation's lock), and registers
the reply as pending (`pending_replies`) under an id chosen up front; the model call is launched
from inside it as soon as the context is known, and counts once it commits (opening.py). The
second, when the model is done, records the reply (head moves to it) or a `turn_failed` event,
and removes the pending row. Every turn ends in exactly one of the two, even if its process dies
(record.close_expired).

Three doors begin one: a turn (`begin_turn`), a regeneration (`begin_regenerate`) and a chat
completion (chat.py, `begin_chat`); a turn and a chat completion share `begin_user_turn`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.messages import open_group
from service.app.turn.opening import Opening, opened, visible
from service.app.turn.plan import (
    Answered,
    InFlight,
    L,
    Lease,
    Plan,
    ReplySpec,
    context_items,
    path_context,
)
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import InvalidRequest, MessageNotFound, ReplyInProgress
from service.domain.message import ContextItem, Role, Utterance, context_item, said
from service.store import pending
from service.store.events import Store
from service.upstream import Provider, Registry


class NewTurn(Utterance, frozen=True, kw_only=True):
    """A turn: what the user says (the reply is the model's), where, and how to ask for the reply."""

    role: Role = "user"
    id: uuid.UUID | None = None  # the user message's id: a retry with the same id is safe
    parent_message_id: uuid.UUID | None = None  # None: under the head
    reply: ReplySpec = msgspec.field(default_factory=ReplySpec)


async def begin_turn(
    store: Store,
    registry: Registry,
    caller: Caller,
    lease: Lease,
    conversation_id: uuid.UUID,
    new: NewTurn,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None = None,
) -> L | Answered:
    """Record the user message under its parent (default: the head) and launch the reply to it.

    With a client id a retry is safe: if the message exists, the retry gets its reply, or 409
    while that is being generated, or, if the turn failed, a new attempt at the reply; the message
    is never recorded twice. An Idempotency-Key does the same (see `again`), waiting for a reply
    still being generated instead of the 409.
    """
    provider, model = registry.resolve(new.reply.provider, new.reply.model)
    message_id = new.id or (None if keyed is None else idempotency.derived_id(caller, keyed))
    cmd = tree.Append(
        **said(new),
        message_id=message_id or new_id(),
        parent_id=new.parent_message_id,
        digest_key=writes.new_digest_key(),
    )

    async def work(o: Opening[L]) -> Answered | None:
        retry = message_id is not None
        return await begin_user_turn(o, conversation_id, new.parent_message_id, [cmd], provider, model, new.reply, retry)

    return await begin(store, caller, lease, launch, keyed, conversation_id, provider, model, new.reply, work)


async def begin_user_turn(
    o: Opening[L],
    conversation_id: uuid.UUID,
    parent_message_id: uuid.UUID | None,
    chain: list[tree.Append],
    provider: Provider,
    model: str,
    spec: ReplySpec,
    retry: bool = False,
) -> Answered | None:
    """Append `chain` (messages one under the other, the last the user's) under `parent_message_id`
    (None: the head) and launch the reply to its last message, in one round trip for the lock,
    the numbers and the parent, and one for the write and the reply's registration.

    `retry`: the last message's id is the client's (or its key's), so it may be recorded already:
    then the retry gets its reply, or 409 while that is being generated, or a new attempt at it."""
    user_cmd = chain[-1]
    given = [i for i in (parent_message_id, user_cmd.message_id if retry else None) if i is not None]
    w = await writes.lock(o.tx, o.caller, conversation_id, len(chain), given, with_head=parent_message_id is None)
    state = w.state
    existing = w.nodes.get(user_cmd.message_id) if retry else None
    if existing is not None:
        return await _resume(o, state, user_cmd, existing, provider, model, spec)
    parent_ref = parent_message_id or state.head_id
    parent = w.nodes.get(parent_ref) if parent_ref is not None else None
    await append_user_turn(o, w, parent_ref, parent, parent_message_id is not None, chain, None, provider, model, spec)
    return None


async def append_user_turn(
    o: Opening[L],
    w: writes.Locked,
    parent_ref: uuid.UUID | None,
    parent: tree.Node | None,
    explicit: bool,
    chain: list[tree.Append],
    path: list[ContextItem] | None,
    provider: Provider,
    model: str,
    spec: ReplySpec,
) -> None:
    """begin_user_turn once the conversation is locked: append `chain` under `parent` (`parent_ref`,
    named `explicit`ly or the head) and launch the reply to its last message. `path`: the context up
    to the parent, if the caller read it already (None: read here)."""
    state = w.state
    if not visible(parent_ref, parent):  # a reply still being generated: 409 (else decide_chain's 404)
        await o.register_under(state, chain[-1].message_id, provider, model, parent_ref, explicit)
    # A chain that starts with tool results answers the calls open at its parent (the OpenAI door
    # sends the results of the calls its last reply asked for as a turn's first messages).
    group = await open_group(o.tx, w.scope, parent) if chain[0].role == "tool" else None
    appended = rules.decide_chain(w.see(parent), parent, chain, group)
    user = views.message_of(appended[-1], state.conversation_id, w.seqs[len(appended) - 1], w.now)
    before = await path_context(o.tx, w.scope, parent) if path is None else path
    items = before + [context_item(e.message_id, e) for e in appended]
    await o.reply(state.conversation_id, state.family_id, user, items, provider, model, spec)
    await o.write_under(w, [*appended], provider, model, parent_ref, explicit)


async def begin_regenerate(
    store: Store,
    registry: Registry,
    caller: Caller,
    lease: Lease,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    spec: ReplySpec,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None = None,
) -> L | Answered:
    """Launch another reply to the message an assistant reply answered: a sibling, i.e. a new branch."""
    provider, model = registry.resolve(spec.provider, spec.model)

    async def work(o: Opening[L]) -> Answered | None:
        w = await writes.lock(o.tx, caller, conversation_id, 0)
        node = (await o.tx.find_nodes(w.scope, [message_id])).get(message_id)
        if node is None or not node.visible:
            raise MessageNotFound(message_id=str(message_id))
        if node.role != "assistant" or node.parent_id is None:
            raise InvalidRequest(
                "Only an assistant reply can be regenerated; to edit a user message, send a turn "
                "with parent_message_id set to that message's parent.",
                message_id=str(message_id),
                role=node.role,
            )
        path = await o.tx.message_path(w.scope, node.parent_id)
        await answer_again(o, w, path, provider, model, spec)
        return None

    return await begin(store, caller, lease, launch, keyed, conversation_id, provider, model, spec, work)


async def answer_again(
    o: Opening[L], w: writes.Locked, path: list[views.PathMessage], provider: Provider, model: str, spec: ReplySpec
) -> None:
    """Launch another reply to the last message of `path` (a user message of the locked
    conversation, shown the path): a sibling of the replies it has, i.e. a new branch."""
    user = as_message(path[-1])
    conversation_id, family_id = w.state.conversation_id, w.state.family_id
    await o.reply(conversation_id, family_id, user, context_items(path), provider, model, spec)
    await o.register(family_id, conversation_id, user.id, provider, model, None)


async def begin(
    store: Store,
    caller: Caller,
    lease: Lease,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None,
    conversation_id: uuid.UUID | None,
    provider: Provider,
    model: str,
    spec: ReplySpec,
    work: Callable[[Opening[L]], Awaitable[Answered | None]],
) -> L | Answered:
    """Run `work` in the turn's transaction (opening.opened); a retry by Idempotency-Key of a turn
    the key already began goes on from that turn instead (`again`). `conversation_id`: the one the
    transaction locks, if known before it starts."""

    async def first(o: Opening[L]) -> Answered | None:
        if o.began is not None:
            return await again(o, o.began, provider, model, spec)
        return await work(o)

    return await opened(store, caller, lease, launch, first, keyed, conversation_id)


async def again(
    o: Opening[L], began: idempotency.Launched, provider: Provider, model: str, spec: ReplySpec
) -> Answered | None:
    """A retry, by Idempotency-Key, of a turn that was taken: its reply as the log holds it; while
    that is being generated, InFlight (opening.opened waits, then asks again); if it failed (or its
    server died), a new attempt at it, which the key names from then on. Never a second user
    message, never a second model call while one runs."""
    w = await writes.lock(o.tx, o.caller, began.conversation_id, 0)  # conversations are never removed
    state, scope = w.state, w.scope
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


def as_message(message: views.PathMessage) -> views.Message:
    return views.Message(**{f: getattr(message, f) for f in views.Message.__struct_fields__})
