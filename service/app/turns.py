"""Turns: record the user's message and launch the model call (its outcome: service/app/outcomes.py).

A turn takes two transactions, never one held open while the model talks. The first records the
user message, reads its context (one `message_path` call), and registers the reply as pending
(`pending_replies`) under an id chosen up front; the model call is launched from inside it, once
the context is known, and counts once it commits. The second, when the model is done, records the
reply (head moves to it) or a `turn_failed` event, and removes the pending row. Every turn ends in
exactly one of the two, even if its process dies (outcomes.close_expired).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec

from service.app import window as windows
from service.app.caller import Caller
from service.app.writes import write_events
from service.app.idempotency import MAX_KEY_LENGTH
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import (
    ConversationNotFound,
    IdempotencyKeyReused,
    InvalidRequest,
    MessageNotFound,
    ReplyInProgress,
)
from service.domain.events import MessageAppended
from service.store import pending
from service.store.events import Store, Tx
from service.upstream import ChatMessage, ChatParams, ChatRequest, Provider, Registry

LEASE_SECONDS = 60.0  # a pending reply whose owner has not renewed it for this long is closed out
# Ids derived from an Idempotency-Key: the same tenant and key always name the same user message.
_KEY_IDS = uuid.UUID("6f1c8a52-3c1e-4d0e-9a43-7d1f6f0c2b11")


class Params(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Sampling parameters; those not given are the provider's defaults."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    stop: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(max_length=4)] | None = (
        None
    )
    seed: int | None = None


class ReplySpec(msgspec.Struct, frozen=True, kw_only=True):
    """Who replies and what they are shown: provider and model (defaults: the registry's), window, params."""

    provider: str | None = None
    model: str | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    params: Params = msgspec.field(default_factory=Params)


class NewTurn(msgspec.Struct, frozen=True, kw_only=True):
    content: str
    id: uuid.UUID | None = None  # the user message's id: a retry with the same id is safe
    parent_message_id: uuid.UUID | None = None  # None: under the head
    metadata: dict[str, Any] = {}
    reply: ReplySpec = msgspec.field(default_factory=ReplySpec)
    idempotency: tuple[str, bytes] | None = None  # (Idempotency-Key, fingerprint of the request)


class ContextItem(msgspec.Struct, frozen=True):
    id: uuid.UUID
    role: str
    content: str


@dataclass(frozen=True)
class Plan:
    """A turn whose user message is recorded and whose reply is pending: what the model call needs."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    user_message: views.Message
    reply_id: uuid.UUID
    provider: Provider
    model: str
    context: list[ContextItem]
    params: Params

    def request(self) -> ChatRequest:
        return ChatRequest(
            model=self.model,
            messages=[ChatMessage(c.role, c.content) for c in self.context],
            params=msgspec.convert(msgspec.to_builtins(self.params), ChatParams),
        )


@dataclass(frozen=True)
class Answered:
    """A retried turn that already has its reply: answered from the log, without calling the model."""

    conversation_id: uuid.UUID
    user_message: views.Message
    reply: views.Message


class Launched(Protocol):
    """A reply whose model call was started while its turn was being recorded."""

    def confirm(self) -> None: ...  # the turn is committed: the reply counts

    def discard(self, error: BaseException) -> None: ...  # it is not: stop the model, record nothing


L = TypeVar("L", bound=Launched)


class Opening(Generic[L]):
    """The transaction recording a turn, and the reply launched from inside it.

    The model call starts as soon as the context is known, while the turn is still being written
    and committed (a few milliseconds saved on every first token), and counts only once the turn
    is committed: if the transaction fails, the call is stopped and nothing of it is recorded.
    """

    def __init__(self, tx: Tx, caller: Caller, owner: uuid.UUID, launch: Callable[[Plan], L]) -> None:
        self.tx = tx
        self.caller = caller
        self._owner = owner
        self._launch = launch
        self._reply_id: uuid.UUID | None = None
        self.launched: L | None = None

    async def register(
        self,
        family_id: uuid.UUID,
        conversation_id: uuid.UUID,
        user_message_id: uuid.UUID,
        provider: Provider,
        model: str,
        around: uuid.UUID | None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Register the reply (its id chosen now) as pending; return (reply id, user message id) of
        the replies already pending that are `around` or answer it. One round trip for both."""
        self._reply_id = uuid.uuid4()
        row = pending.PendingReply(
            family_id=family_id,
            reply_id=self._reply_id,
            tenant=self.caller.tenant,
            conversation_id=conversation_id,
            user_message_id=user_message_id,
            provider=provider.name,
            model=model,
            actor=self.caller.actor,
            request_id=self.caller.request_id,
        )
        return await pending.register(self.tx, row, self._owner, LEASE_SECONDS, around)

    async def reply(
        self,
        family_id: uuid.UUID,
        user: views.Message,
        items: list[ContextItem],
        provider: Provider,
        model: str,
        spec: ReplySpec,
    ) -> None:
        """Window the context and start the model on it, under the id `register` chose."""
        assert self._reply_id is not None, "register the reply first"
        context = await windows.apply(spec.window, items, model)
        plan = Plan(
            user.conversation_id, family_id, user, self._reply_id, provider, model, context, spec.params
        )
        self.launched = self._launch(plan)


async def opened(
    store: Store,
    caller: Caller,
    owner: uuid.UUID,
    launch: Callable[[Plan], L],
    work: Callable[[Opening[L]], Awaitable[Answered | None]],
) -> L | Answered:
    """Run `work` in one transaction; the reply it launched is confirmed once that commits."""
    opening: Opening[L] | None = None
    try:
        async with store.transaction() as tx:
            opening = Opening(tx, caller, owner, launch)
            answered = await work(opening)
    except BaseException as exc:
        if opening is not None and opening.launched is not None:
            opening.launched.discard(exc)
        raise
    if answered is not None:
        return answered
    assert opening.launched is not None, "a turn either launches its reply or is answered already"
    opening.launched.confirm()
    return opening.launched


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

    With a client id (or an Idempotency-Key, from which the id is derived) a retry is safe: if
    the message exists, the retry gets its reply, or 409 while that is being generated, or, if
    the turn failed, a new attempt at the reply; the message is never recorded twice.
    """
    provider, model = registry.resolve(new.reply.provider, new.reply.model)

    async def work(o: Opening[L]) -> Answered | None:
        tx = o.tx
        message_id = new.id
        if new.idempotency is not None:
            derived = await _claim_key(tx, caller, *new.idempotency)
            message_id = message_id or derived
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
        cmd = tree.AppendMessage(
            message_id=message_id,
            parent_id=new.parent_message_id,
            role="user",
            content=new.content,
            metadata=new.metadata,
        )
        existing = nodes.get(message_id) if retry else None
        if existing is not None:
            return await _resume(o, state, cmd, existing, provider, model, new.reply)
        around = await o.register(state.family_id, conversation_id, message_id, provider, model, parent_ref)
        rules.check_parent_settled(parent_ref, new.parent_message_id is not None, around)
        decision, appended = rules.decide_chain(state, nodes.get(parent_ref) if parent_ref else None, [cmd])
        path = await tx.message_path(scope, parent_ref) if parent_ref is not None else []
        user = message_view(appended[0], new.content, conversation_id, seqs[0], now)
        items = [*context_items(path), ContextItem(message_id, "user", new.content)]
        await o.reply(state.family_id, user, items, provider, model, new.reply)
        await write_events(tx, caller, state, decision, now, seqs, {message_id: new.content})
        return None

    return await opened(store, caller, owner, launch, work)


async def begin_regenerate(
    store: Store,
    registry: Registry,
    caller: Caller,
    owner: uuid.UUID,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    spec: ReplySpec,
    launch: Callable[[Plan], L],
) -> L:
    """Launch another reply to the message an assistant reply answered: a sibling, i.e. a new branch."""
    provider, model = registry.resolve(spec.provider, spec.model)

    async def work(o: Opening[L]) -> None:
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
        await o.register(state.family_id, conversation_id, node.parent_id, provider, model, None)
        path = await o.tx.message_path(scope, node.parent_id)
        await o.reply(state.family_id, _plain(path[-1]), context_items(path), provider, model, spec)

    launched = await opened(store, caller, owner, launch, work)
    assert not isinstance(launched, Answered)
    return launched


async def _resume(
    o: Opening[L],
    state: tree.ConversationState,
    cmd: tree.AppendMessage,
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
    await o.reply(state.family_id, user, context_items(path), provider, model, spec)
    return None


async def _claim_key(tx: Tx, caller: Caller, key: str, fingerprint: bytes) -> uuid.UUID:
    """Record the key with its request's fingerprint (with the user message: both or neither), and
    derive the user message's id from it, so that a retry finds the message it recorded."""
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    if not await tx.claim_idempotency_key(caller.tenant, key, fingerprint):
        stored = await tx.find_idempotency_key(caller.tenant, key)
        assert stored is not None
        if stored["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused()
    return uuid.uuid5(_KEY_IDS, f"{caller.tenant}\n{key}")


def message_view(
    event: MessageAppended, content: str, conversation_id: uuid.UUID, seq: int, created_at: datetime
) -> views.Message:
    return views.Message(
        id=event.message_id,
        conversation_id=conversation_id,
        parent_message_id=event.parent_id,
        role=event.role,
        content=content,
        metadata=event.metadata,
        depth=event.depth,
        seq=seq,
        created_at=created_at,
        generation=event.generation,
    )


def context_items(path: list[views.PathMessage]) -> list[ContextItem]:
    # A redacted message's text is withheld from every read, and so from the model too.
    return [ContextItem(m.id, m.role, m.content) for m in path]


def _plain(message: views.PathMessage) -> views.Message:
    return views.Message(**{f: getattr(message, f) for f in views.Message.__struct_fields__})
