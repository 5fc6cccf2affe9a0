"""Chat completions as turns (the OpenAI-compatible door, and any door whose clients resend their
history): which conversation the messages sent build or continue, and which of them are new
(auto-threading: service/domain/threads.py); the turn itself is begun as any other
(begin.append_user_turn)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec

from service.app import idempotency, writes
from service.app import window as windows
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.turn import record
from service.app.turn.begin import append_user_turn, as_message, begin
from service.app.turn.models import resolve_model
from service.app.turn.opening import Opening, visible
from service.app.turn.plan import (
    Answered,
    InFlight,
    L,
    Lease,
    Params,
    Plan,
    ReplyForm,
    ReplySpec,
    context_items,
)
from service.domain import threads, tree, views
from service.domain import turns as rules
from service.domain.errors import InvalidRequest
from service.domain.message import Utterance, context_item, said
from service.store.events import Store
from service.upstream import Provider, Registry

# A message the OpenAI door sends, as convtree stores it (service/api/openai_compat.py converts it).
Sent = Utterance


class Chat(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion request, as a turn: its last message is the turn.

    With `conversation_id`, `messages` continue the path to `parent_message_id` (None: the head).
    If the first of them is that path's root, said exactly (threads.matched), they are the history
    resent: the longest prefix of them equal to the path is not appended again, and the rest goes
    under the last message matched (a history that differs from the path at message k becomes a
    branch under message k-1; one that is all stored gets another reply to its last message,
    unless it is a retry whose client never got the reply it asked for: `_resent`).
    Otherwise they are the new messages only, appended under the parent.

    Without it and with `auto_thread`, the tenant's conversation whose stored path is the longest
    prefix of `messages` (looked up by path digest: Tx.find_thread) is continued the same way; none
    is: a new conversation. Without either, `messages` make a new conversation (a chain, root first).
    Either way the last message is the turn: the user's, or the result of a tool call (after the
    assistant's call, the tool results sent back).
    """

    messages: list[Sent]
    model: str
    conversation_id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    params: Params = msgspec.field(default_factory=Params)
    auto_thread: bool = False
    reply_form: ReplyForm = "given"  # how the reply is stored (plan.ReplyForm): the door's clients' form


async def begin_chat(
    store: Store,
    registry: Registry,
    caller: Caller,
    lease: Lease,
    chat: Chat,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None = None,
) -> L | Answered:
    """Take the chat's turn; with an Idempotency-Key, a retry is answered as begin.again says."""
    provider, model = resolve_model(registry, chat.model)
    if not chat.messages or chat.messages[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            "The last message must be the user's, or a tool's result: it is the turn to answer.",
            parameter=f"messages[{max(len(chat.messages) - 1, 0)}].role",
        )
    if chat.parent_message_id is not None and chat.conversation_id is None:
        raise InvalidRequest("parent_message_id needs the conversation_id it belongs to.")
    spec = ReplySpec(window=chat.window, params=chat.params, reply_form=chat.reply_form)
    conversation_id, parent_id = chat.conversation_id, chat.parent_message_id
    if conversation_id is None and chat.auto_thread:
        found = await find_thread(store, caller, chat.messages)
        if found is not None:
            conversation_id, parent_id = found
    waited: set[uuid.UUID] = set()  # the replies this request waited for (see _resent)

    async def work(o: Opening[L]) -> Answered | None:
        if conversation_id is None:
            await _new_conversation(o, chat, provider, model, spec)
            return None
        return await _continue(o, conversation_id, parent_id, chat.messages, provider, model, spec, waited)

    return await begin(store, caller, lease, launch, keyed, conversation_id, provider, model, spec, work)


async def find_thread(store: Store, caller: Caller, messages: list[Sent]) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The conversation of the caller's tenant, and the message in it, whose path (root to that
    message) is the longest prefix of `messages`; None: no stored path starts as they do. One index
    probe per message (message_paths), whatever the number of conversations."""
    async with store.reader() as tx:
        found = await tx.find_thread(caller.tenant, threads.prefix_digests(messages))
    return None if found is None else (found[1], found[2])


async def _continue(
    o: Opening[L],
    conversation_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    sent: list[Sent],
    provider: Provider,
    model: str,
    spec: ReplySpec,
    waited: set[uuid.UUID],
) -> Answered | None:
    """Take the turn in `conversation_id` under `parent_id` (None: the head), appending only the
    sent messages the path there does not already hold (see Chat)."""
    given = [] if parent_id is None else [parent_id]
    w = await writes.lock(o.tx, o.caller, conversation_id, len(sent), given, with_head=parent_id is None)
    parent_ref = parent_id or w.state.head_id
    parent = w.nodes.get(parent_ref) if parent_ref is not None else None
    explicit = parent_id is not None
    if parent is None or not visible(parent_ref, parent):  # nothing to match: refused or appended as before
        await append_user_turn(o, w, parent_ref, parent, explicit, chain_of(sent, parent_id), None, provider, model, spec)
        return None
    path = await o.tx.message_path(w.scope, parent.message_id)
    k = threads.matched(sent, path)
    if k == len(sent):  # all of it is stored: its last message, the user's, is answered (again)
        return await _resent(o, w, path[:k], provider, model, spec, waited)
    if 0 < k < len(path):  # it leaves the path after message k: a branch from there
        base = path[k - 1].id
        parent_ref, parent, explicit = base, (await o.tx.find_nodes(w.scope, [base])).get(base), True
    before = context_items(path[:k] if k else path)
    chain = chain_of(sent[k:], parent_ref if k else parent_id)
    await append_user_turn(o, w, parent_ref, parent, explicit, chain, before, provider, model, spec)
    return None


async def _resent(
    o: Opening[L],
    w: writes.Locked,
    path: list[views.PathMessage],
    provider: Provider,
    model: str,
    spec: ReplySpec,
    waited: set[uuid.UUID],
) -> Answered | None:
    """A history resent whole: another reply to its last message, unless the request is a retry
    of the turn that message began, whose client never got its reply.

    A client resends the same history after a 503 or a timeout (OpenAI's clients do by themselves),
    with nothing to tell it from a request for another reply. Its turn's reply may still be in
    flight (being generated, or kept while the database was busy or away): the retry waits until it
    is recorded (InFlight: opening.opened waits, then this runs again) and is answered with it, never
    a second model call meanwhile. Or that reply was recorded after its client was told it could
    not be (`record_delayed`): while it is the last reply to the message, it is the answer. A reply
    cut short otherwise (the client left, the model failed) is answered again, as before."""
    user = as_message(path[-1])
    state = w.state
    replies = [m for m in await o.tx.list_children(w.scope, user) if m.role == "assistant"]
    owed = next((r for r in replies if r.id in waited and _whole(r)), None)
    if owed is None and replies and _delayed(replies[-1]):
        owed = replies[-1]
    if owed is not None:
        return Answered(state.conversation_id, user, owed)
    # Registered before the model is called (a round trip more than answer_again's), so that a
    # retry that has to wait for the reply in flight never calls the model at all.
    around = await o.register(state.family_id, state.conversation_id, user.id, provider, model, user.id)
    for reply_id, user_message_id in around:
        if user_message_id == user.id:  # its reply is in flight: wait for it (rolls the registration back)
            waited.add(reply_id)
            raise InFlight(state.family_id, reply_id)
    await o.reply(state.conversation_id, state.family_id, user, context_items(path), provider, model, spec)
    return None


def _whole(reply: views.Message) -> bool:
    """Whether the model's reply was recorded as it gave it: complete, or with all its text but
    recorded after its client was told it could not be (record.RECORD_DELAYED)."""
    g = reply.generation
    return g is not None and (g.interruption is None or _delayed(reply))


def _delayed(reply: views.Message) -> bool:
    g = reply.generation
    return g is not None and g.interruption is not None and g.interruption.kind == record.RECORD_DELAYED.kind


async def _new_conversation(o: Opening[L], chat: Chat, provider: Provider, model: str, spec: ReplySpec) -> None:
    await new_conversation(o, chain_of(chat.messages, None), provider, model, spec)


async def new_conversation(
    o: Opening[L],
    chain: list[tree.Append],
    provider: Provider,
    model: str,
    spec: ReplySpec,
    ids: tuple[uuid.UUID, uuid.UUID] | None = None,
) -> tree.Create:
    """Take the turn in a new conversation made of `chain` (root first, the last message the
    turn's), whose (conversation, family) `ids` may be chosen by the caller; returns the
    conversation's creation."""
    conversation_id, family_id = ids or (new_id(), new_id())
    cmd = tree.Create(
        conversation_id=conversation_id,
        family_id=family_id,
        title=None,
        metadata={},
        system=None,
        system_message_id=None,
    )
    created = tree.create_conversation(cmd)
    w = await writes.lock_new(o.tx, o.caller, cmd.conversation_id, len(created) + len(chain))
    start = tree.initial_state(cmd)
    appended = rules.decide_chain(tree.fold(start, created), None, chain)
    user = views.message_of(appended[-1], cmd.conversation_id, w.seqs[-1], w.now)
    items = [context_item(e.message_id, e) for e in appended]
    await o.reply(cmd.conversation_id, cmd.family_id, user, items, provider, model, spec)
    await o.create(w, start, [*created, *appended], provider, model)
    return cmd


def chain_of(messages: list[Sent], parent_id: uuid.UUID | None) -> list[tree.Append]:
    """Messages one under the other; the first under `parent_id` (None: under the head)."""
    ids = [new_id() for _ in messages]
    return [
        tree.Append(
            **said(m),
            message_id=ids[i],
            parent_id=parent_id if i == 0 else ids[i - 1],
            digest_key=writes.new_digest_key(),
        )
        for i, m in enumerate(messages)
    ]
