"""Chat completions as turns (the OpenAI-compatible endpoint): which conversation the messages sent
build or continue, which provider a model name means, and which models there are."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import msgspec

from service.app import idempotency, opening, turns
from service.app import window as windows
from service.app import writes
from service.app.caller import Caller
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import ConversationNotFound, InvalidRequest, UpstreamError
from service.domain.events import Event, seal
from service.domain.message import Utterance, context_item, said
from service.store.events import Store
from service.upstream import Provider, Registry

MODELS_TIMEOUT = 5.0  # a provider that cannot list its models this fast is listed by its configuration


# A message the OpenAI door sends, as convtree stores it (service/api/openai_compat.py converts it).
Sent = Utterance


class Chat(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion request, as a turn.

    Without `conversation_id`, `messages` is the whole history: a new conversation is made of it
    (a chain, root first). With it, `messages` are the new messages only, appended under
    `parent_message_id` or, without it, the head. Either way the last message is the user's turn.
    """

    messages: list[Sent]
    model: str
    conversation_id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    params: opening.Params = msgspec.field(default_factory=opening.Params)


def resolve_model(registry: Registry, name: str) -> tuple[Provider, str]:
    """`provider/model`, or a bare model name: the provider offering it (the default one first)."""
    prefix, slash, rest = name.partition("/")
    if slash and prefix in registry.names():
        return registry.resolve(prefix, rest or None)
    offering = [n for n, c in registry.config.providers.items() if name in c.models]
    if not offering or registry.config.default_provider in offering:
        return registry.resolve(None, name)
    return registry.resolve(min(offering), name)


async def begin_chat(
    store: Store,
    registry: Registry,
    caller: Caller,
    owner: uuid.UUID,
    chat: Chat,
    launch: Callable[[opening.Plan], opening.L],
    keyed: idempotency.Keyed | None = None,
) -> opening.L | opening.Answered:
    """Take the chat's turn; with an Idempotency-Key, a retry is answered as turns.again says."""
    provider, model = resolve_model(registry, chat.model)
    if not chat.messages or chat.messages[-1].role != "user":
        raise InvalidRequest("The last message must be the user's: it is the turn to answer.")
    if chat.parent_message_id is not None and chat.conversation_id is None:
        raise InvalidRequest("parent_message_id needs the conversation_id it belongs to.")
    spec = opening.ReplySpec(window=chat.window, params=chat.params)

    async def work(o: opening.Opening[opening.L]) -> opening.Answered | None:
        began = await o.claim()
        if began is not None:
            return await turns.again(o, began, provider, model, spec)
        if chat.conversation_id is None:
            return await _new_conversation(o, chat, provider, model, spec)
        # One round trip: the lock, the numbers and the parent (given, or the head).
        given = [] if chat.parent_message_id is None else [chat.parent_message_id]
        begun = await o.tx.begin_append(
            caller.tenant, chat.conversation_id, len(chat.messages), given, chat.parent_message_id is None
        )
        if begun is None:
            raise ConversationNotFound(conversation_id=str(chat.conversation_id))
        state, now, seqs, nodes = begun
        scope = tree.scope(state)
        parent_ref = chat.parent_message_id or state.head_id
        parent = nodes.get(parent_ref) if parent_ref is not None else None
        explicit = chat.parent_message_id is not None
        chain = _chain(chat.messages, chat.parent_message_id)
        if not opening.visible(parent_ref, parent):  # as in turns.begin_turn: 409, else 404
            await o.register_under(state, chain[-1].message_id, provider, model, parent_ref, explicit)
        state = tree.seen(state, parent)
        appended = rules.decide_chain(state, parent, chain)
        bodies = {e.message_id: e.content for e in appended}
        user = views.message_of(appended[-1], state.conversation_id, seqs[len(appended) - 1], now)
        items = await turns.path_context(o.tx, scope, parent) + [context_item(e.message_id, e) for e in appended]
        await o.reply(state.conversation_id, state.family_id, user, items, provider, model, spec)
        await o.write_under(state, [*appended], now, seqs, bodies, provider, model, parent_ref, explicit)
        return None

    return await opening.opened(store, caller, owner, launch, work, keyed)


async def _new_conversation(
    o: opening.Opening[opening.L], chat: Chat, provider: Provider, model: str, spec: opening.ReplySpec
) -> None:
    caller = o.caller
    cmd = tree.Create(
        conversation_id=uuid.uuid4(),
        family_id=uuid.uuid4(),
        title=None,
        metadata={},
        system=None,
        system_message_id=None,
    )
    created = tree.create_conversation(cmd)
    now, seqs = await o.tx.begin_create(caller.tenant, cmd.conversation_id, len(created) + len(chat.messages))
    chain = _chain(chat.messages, None)
    start = tree.fold(tree.initial_state(cmd), created)
    appended = rules.decide_chain(start, None, chain)
    bodies = {e.message_id: e.content for e in appended}
    user = views.message_of(appended[-1], cmd.conversation_id, seqs[-1], now)
    items = [context_item(e.message_id, e) for e in appended]
    await o.reply(cmd.conversation_id, cmd.family_id, user, items, provider, model, spec)
    await o.register(cmd.family_id, cmd.conversation_id, chain[-1].message_id, provider, model, None)
    events: list[Event] = [*created, *appended]
    envelopes = writes.envelopes(caller, cmd.conversation_id, cmd.family_id, now, seqs)
    sealed = seal(tree.initial_state(cmd).last_hash, envelopes, events)
    state = tree.chained(tree.fold(start, appended), sealed)
    await o.tx.insert_conversation(caller.tenant, state, sealed, bodies, None, {})


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


async def list_models(registry: Registry) -> list[tuple[str, str]]:
    """(provider, model) for every configured provider: its allow-list when it has one, else what
    it lists itself (or its default model, when it cannot be asked)."""

    async def of(name: str) -> list[str]:
        config = registry.config.providers.get(name)
        if config is not None and config.models:
            return list(config.models)
        fallback = [config.default_model] if config is not None and config.default_model else []
        try:
            return await asyncio.wait_for(registry.get(name).list_models(), MODELS_TIMEOUT) or fallback
        except (UpstreamError, TimeoutError):
            return fallback

    names = registry.names()
    listed = await asyncio.gather(*(of(n) for n in names))
    return [(name, model) for name, models in zip(names, listed, strict=True) for model in models]
