"""Chat completions as turns (the OpenAI-compatible door): which conversation the messages sent
build or continue; the turn itself is begun as any other (begin.begin_user_turn)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec

from service.app import idempotency, writes
from service.app import window as windows
from service.app.caller import Caller
from service.app.turn.begin import begin, begin_user_turn
from service.app.turn.models import resolve_model
from service.app.turn.opening import Opening
from service.app.turn.plan import Answered, L, Lease, Params, Plan, ReplySpec
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import InvalidRequest
from service.domain.message import Utterance, context_item, said
from service.store.events import Store
from service.upstream import Provider, Registry


# A message the OpenAI door sends, as convtree stores it (service/api/openai_compat.py converts it).
Sent = Utterance


class Chat(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion request, as a turn.

    Without `conversation_id`, `messages` is the whole conversation so far: a new one is made of it
    (a chain, root first). With it, `messages` are the new messages only, appended under
    `parent_message_id` or, without it, the head. Either way the last message is the user's turn.

    `auto_thread`: the messages are a whole history, to be matched against the stored paths and
    continued where it matches (the Ollama door sets it). Until that matching exists it changes
    nothing: the history makes a new conversation, as without `conversation_id`.
    """

    messages: list[Sent]
    model: str
    conversation_id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    params: Params = msgspec.field(default_factory=Params)
    auto_thread: bool = False


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
    if not chat.messages or chat.messages[-1].role != "user":
        raise InvalidRequest("The last message must be the user's: it is the turn to answer.")
    if chat.parent_message_id is not None and chat.conversation_id is None:
        raise InvalidRequest("parent_message_id needs the conversation_id it belongs to.")
    spec = ReplySpec(window=chat.window, params=chat.params)

    async def work(o: Opening[L]) -> Answered | None:
        if chat.conversation_id is None:
            await _new_conversation(o, chat, provider, model, spec)
            return None
        chain = _chain(chat.messages, chat.parent_message_id)
        return await begin_user_turn(o, chat.conversation_id, chat.parent_message_id, chain, provider, model, spec)

    return await begin(store, caller, lease, launch, keyed, None, provider, model, spec, work)


async def _new_conversation(o: Opening[L], chat: Chat, provider: Provider, model: str, spec: ReplySpec) -> None:
    cmd = tree.Create(
        conversation_id=uuid.uuid4(),
        family_id=uuid.uuid4(),
        title=None,
        metadata={},
        system=None,
        system_message_id=None,
    )
    created = tree.create_conversation(cmd)
    w = await writes.lock_new(o.tx, o.caller, cmd.conversation_id, len(created) + len(chat.messages))
    chain = _chain(chat.messages, None)
    start = tree.initial_state(cmd)
    appended = rules.decide_chain(tree.fold(start, created), None, chain)
    bodies = {e.message_id: e.content for e in appended}
    user = views.message_of(appended[-1], cmd.conversation_id, w.seqs[-1], w.now)
    items = [context_item(e.message_id, e) for e in appended]
    await o.reply(cmd.conversation_id, cmd.family_id, user, items, provider, model, spec)
    await o.register(cmd.family_id, cmd.conversation_id, chain[-1].message_id, provider, model, None)
    await w.create(start, [*created, *appended], bodies, None, {})


def _chain(messages: list[Sent], parent_id: uuid.UUID | None) -> list[tree.Append]:
    """Messages one under the other; the first under `parent_id` (None: under the head)."""
    ids = [uuid.uuid4() for _ in messages]
    return [
        tree.Append(
            **said(m),
            message_id=ids[i],
            parent_id=parent_id if i == 0 else ids[i - 1],
            digest_key=writes.new_digest_key(),
        )
        for i, m in enumerate(messages)
    ]
