"""The transaction recording a turn, and the model call launched from inside it (service/app/turns.py
has the use cases): the call starts as soon as the context is known and counts once the
transaction commits; nothing of the turn reaches its client before (generation.Generation).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec

from service.app import idempotency
from service.app import window as windows
from service.app import writes
from service.app.caller import Caller
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import ConvtreeError
from service.domain.events import Event, MessageAppended, seal
from service.domain.message import ContextItem
from service.store import pending
from service.store.events import Store, Tx
from service.upstream import ChatParams, ChatRequest, Provider

log = logging.getLogger("convtree.turns")

LEASE_SECONDS = 60.0  # a pending reply whose owner has not renewed it for this long is closed out


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
            messages=list(self.context),
            params=msgspec.convert(msgspec.to_builtins(self.params), ChatParams),
        )


@dataclass(frozen=True)
class Answered:
    """A retried turn that already has its reply: answered from the log, without calling the model."""

    conversation_id: uuid.UUID
    user_message: views.Message
    reply: views.Message
    by_key: bool = False  # a retry by Idempotency-Key (which replays the original status), not by id


class InFlight(Exception):
    """The reply a key launched is still being generated: wait until it is recorded, then look again."""

    def __init__(self, family_id: uuid.UUID, reply_id: uuid.UUID) -> None:
        super().__init__(f"reply {reply_id} is being generated")
        self.family_id = family_id
        self.reply_id = reply_id


class Launched(Protocol):
    """A reply whose model call was started while its turn was being recorded."""

    def confirm(self) -> None: ...  # the turn is committed: the reply counts

    def discard(self, error: BaseException) -> None: ...  # it is not: stop the model, record nothing


L = TypeVar("L", bound=Launched)


class Opening(Generic[L]):
    """The transaction recording a turn, and the reply launched from inside it.

    The model call starts as soon as the context is known, while the turn is still being written
    (its reply registered in the same round trip: `write_under`) and committed, milliseconds saved
    on every first token; it counts only once the turn is committed: if the transaction fails, or
    the write refuses the turn, the call is stopped at once (most often before its request has
    left) and nothing of it is recorded.
    """

    def __init__(
        self,
        tx: Tx,
        caller: Caller,
        owner: uuid.UUID,
        launch: Callable[[Plan], L],
        keyed: idempotency.Keyed | None = None,
    ) -> None:
        self.tx = tx
        self.caller = caller
        self.keyed = keyed
        self._owner = owner
        self._launch = launch
        self.reply_id = uuid.uuid4()  # the reply's id, chosen up front: registered and launched under it
        self.launched: L | None = None
        self.plan: Plan | None = None

    async def claim(self) -> idempotency.Launched | None:
        """Claim the request's Idempotency-Key (if it has one): None, the turn is this request's to
        take; else the turn the key began (`turns.again` answers it)."""
        if self.keyed is None:
            return None
        found = await idempotency.claim(self.tx, self.caller, self.keyed)
        assert not isinstance(found, idempotency.Replayed), "a key's fingerprint names its route"
        return found

    async def register(
        self,
        family_id: uuid.UUID,
        conversation_id: uuid.UUID,
        user_message_id: uuid.UUID,
        provider: Provider,
        model: str,
        around: uuid.UUID | None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Register the reply as pending; return (reply id, user message id) of the replies already
        pending that are `around` or answer it. One round trip for both."""
        row = pending.PendingReply(
            family_id=family_id,
            reply_id=self.reply_id,
            tenant=self.caller.tenant,
            conversation_id=conversation_id,
            user_message_id=user_message_id,
            provider=provider.name,
            model=model,
            actor=self.caller.actor,
            request_id=self.caller.request_id,
        )
        return await pending.register(self.tx, row, self._owner, LEASE_SECONDS, around)

    async def register_under(
        self,
        state: tree.ConversationState,
        user_message_id: uuid.UUID,
        provider: Provider,
        model: str,
        parent_ref: uuid.UUID | None,
        explicit: bool,
    ) -> None:
        """Register the reply to a new user message under `parent_ref`, refusing the turn if that
        parent is still being generated (or, unless named `explicit`ly, awaits its own reply)."""
        around = await self.register(
            state.family_id, state.conversation_id, user_message_id, provider, model, parent_ref
        )
        rules.check_parent_settled(parent_ref, explicit, around)

    async def write_under(
        self,
        state: tree.ConversationState,
        events: list[Event],
        now: datetime,
        seqs: list[int],
        bodies: dict[uuid.UUID, str],
        provider: Provider,
        model: str,
        parent_ref: uuid.UUID | None,
        explicit: bool,
    ) -> None:
        """Write a turn's new messages (the last, the user's, answered by the reply) and register
        the reply, in one round trip; then refuse the turn as `register_under` does."""
        envelopes = writes.envelopes(self.caller, state.conversation_id, state.family_id, now, seqs[: len(events)])
        sealed = seal(state.last_hash, envelopes, events)
        user = events[-1]
        assert isinstance(user, MessageAppended)
        around = await self.tx.append_turn(
            self.caller.tenant,
            tree.chained(tree.fold(state, events), sealed),
            sealed,
            bodies,
            (self.reply_id, user.message_id, provider.name, model),
            self._owner,
            LEASE_SECONDS,
            parent_ref,
        )
        rules.check_parent_settled(parent_ref, explicit, around)

    async def reply(
        self,
        conversation_id: uuid.UUID,
        family_id: uuid.UUID,
        user: views.Message,
        items: list[ContextItem],
        provider: Provider,
        model: str,
        spec: ReplySpec,
    ) -> None:
        """Window the context and start the model on it. The reply is `conversation_id`'s, the
        conversation written through, wherever `user` lives (a fork answers inherited messages)."""
        context = await windows.apply(spec.window, items, model)
        plan = Plan(conversation_id, family_id, user, self.reply_id, provider, model, context, spec.params)
        self.plan = plan
        self.launched = self._launch(plan)


# Transactions whose COMMIT is still running after their caller has been answered (see `opened`).
_committing: set[asyncio.Task[None]] = set()


async def opened(
    store: Store,
    caller: Caller,
    owner: uuid.UUID,
    launch: Callable[[Plan], L],
    work: Callable[[Opening[L]], Awaitable[Answered | None]],
    keyed: idempotency.Keyed | None = None,
    conversation_id: uuid.UUID | None = None,  # the existing conversation `work` locks, if known
) -> L | Answered:
    """Run `work` in one transaction (see `_opened`). A retry by Idempotency-Key whose reply is
    still being generated (InFlight, by this process or another) waits until it is recorded and
    then looks again: the model is called once per key, however many retries arrive meanwhile."""
    while True:
        try:
            return await _opened(store, caller, owner, launch, work, keyed, conversation_id)
        except InFlight as busy:
            await _recorded(store, busy.family_id, busy.reply_id)


async def _recorded(store: Store, family_id: uuid.UUID, reply_id: uuid.UUID) -> None:
    # Polled: the reply may be another process's. Every pending reply ends, recorded by its owner
    # or, if that died, closed out when its lease runs out (outcomes.close_expired).
    while True:
        async with store.reader() as tx:
            if not await pending.is_pending(tx, family_id, reply_id):
                return
        await asyncio.sleep(RETRY_POLL_SECONDS)


RETRY_POLL_SECONDS = 0.1


async def _opened(
    store: Store,
    caller: Caller,
    owner: uuid.UUID,
    launch: Callable[[Plan], L],
    work: Callable[[Opening[L]], Awaitable[Answered | None]],
    keyed: idempotency.Keyed | None,
    conversation_id: uuid.UUID | None,
) -> L | Answered:
    """Run `work` in one transaction; the reply it launched is confirmed once that commits.

    The reply is returned as soon as the transaction has nothing left but its COMMIT, which goes
    on in a task of its own: the caller can start its answer (a stream's headers) meanwhile. Every
    refusal has been decided by then; the COMMIT failing is all that may still happen, and the
    reply then settles with that error without ever having counted (Launched.discard). A caller
    cancelled before that point cancels the transaction; after it, the turn goes on without it.
    """
    written: asyncio.Future[L | Answered] = asyncio.get_running_loop().create_future()
    written.add_done_callback(_retrieved)  # a caller cancelled meanwhile never reads its error

    async def transaction() -> None:
        o: Opening[L] | None = None
        try:
            gate = None if conversation_id is None else (caller.tenant, conversation_id)
            async with store.transaction(gate) as tx:
                o = Opening(tx, caller, owner, launch, keyed)
                answered = await work(o)
                if answered is None:
                    assert o.launched is not None and o.plan is not None, "a turn launches its reply or is answered"
                    if keyed is not None:  # the key names the reply it launched, from the same commit
                        plan = o.plan
                        turn = idempotency.Launched(plan.conversation_id, plan.user_message.id, plan.reply_id)
                        await idempotency.launched(tx, caller, keyed, turn)
                    written.set_result(o.launched)
        except BaseException as exc:
            if o is not None and o.launched is not None:
                o.launched.discard(exc)
            if not written.done():
                written.set_exception(exc)
            elif o is not None and not isinstance(exc, ConvtreeError):
                # The COMMIT failed: the reply settles with this error; the log says where it came from.
                log.error("the turn of reply %s could not be committed", o.reply_id, exc_info=exc)
            return
        if answered is not None:
            written.set_result(answered)
        else:
            assert o.launched is not None
            o.launched.confirm()

    task = asyncio.create_task(transaction())
    _committing.add(task)
    task.add_done_callback(_committing.discard)
    try:
        return await asyncio.shield(written)
    except asyncio.CancelledError:
        if not written.done():
            task.cancel()
        raise


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def visible(parent_ref: uuid.UUID | None, parent: tree.Node | None) -> bool:
    """Whether a new message's parent is there to hang under (None: the root of an empty conversation).

    Only then is the reply launched before it is registered: with the parent there, the one check
    left is whether the parent (the head) still awaits its own reply, a refusal rare enough that
    the model call it stops, at once and most often before its request has left, costs less than
    a round trip more before every first token (the registration rides on the turn's write).
    """
    return parent_ref is None or (parent is not None and parent.visible)
