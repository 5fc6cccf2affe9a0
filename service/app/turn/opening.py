"""The transaction recording a turn, and the model call launched from inside it (begin.py has the
use cases): the call starts as soon as the context is known and counts once the transaction
commits; nothing of the turn reaches its client before (relay.ReplyInFlight).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from service.app import idempotency, writes
from service.app import window as windows
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.turn.plan import InFlight, L, Lease, Plan, ReplySpec, runs_of
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import ConvtreeError
from service.domain.events import Event, MessageAppended
from service.domain.message import ContextItem
from service.store import pending
from service.store.events import Store, Tx
from service.store.responses import ResponseRow
from service.upstream import Provider

log = logging.getLogger("convtree.turns")

# What a turn's transaction may answer instead of launching a reply (a retry's answer: Answered for
# the turn doors, the response a key created for the Responses API's).
A = TypeVar("A")


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
        lease: Lease,
        launch: Callable[[Plan], L],
        began: idempotency.Launched | None = None,
    ) -> None:
        self.tx = tx
        self.caller = caller
        self.began = began  # the turn the request's Idempotency-Key began, if a retry's
        self._lease = lease
        self._launch = launch
        self.reply_id = new_id()  # the reply's id, chosen up front: registered and launched under it
        self.launched: L | None = None
        self.plan: Plan | None = None
        # The turn's record as a response (the Responses API's: service/app/responses), written by
        # the statement that writes the turn (write_under, create), not in a round trip of its own.
        self.response: ResponseRow | None = None

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
        return await pending.register(self.tx, row, self._lease.owner, self._lease.seconds, around)

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
        w: writes.Locked,
        events: list[Event],
        provider: Provider,
        model: str,
        parent_ref: uuid.UUID | None,
        explicit: bool,
    ) -> None:
        """Write a turn's new messages (the last, the user's, answered by the reply) and register
        the reply, in one round trip; then refuse the turn as `register_under` does."""
        user = events[-1]
        assert isinstance(user, MessageAppended)
        reply = (self.reply_id, user.message_id, provider.name, model)
        around = await w.write_turn(events, reply, self._lease.owner, self._lease.seconds, parent_ref, self.response)
        rules.check_parent_settled(parent_ref, explicit, around)

    async def create(
        self, w: writes.LockedNew, start: tree.ConversationState, events: list[Event], provider: Provider, model: str
    ) -> None:
        """Write a new conversation made of `events` (the last, the user's, answered by the reply)
        and register the reply, in one round trip (nothing can be pending in a new conversation)."""
        user = events[-1]
        assert isinstance(user, MessageAppended)
        reply = (self.reply_id, user.message_id, provider.name, model)
        await w.create_turn(start, events, reply, self._lease.owner, self._lease.seconds, self.response)

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
        plan = Plan(
            conversation_id, family_id, user, self.reply_id, provider, model, context, runs_of(items, context), spec.params,
            reply_form=spec.reply_form, instructions=spec.instructions,
        )
        self.plan = plan
        self.launched = self._launch(plan)


# Transactions whose COMMIT is still running after their caller has been answered (see `opened`).
_committing: set[asyncio.Task[None]] = set()


async def opened(
    store: Store,
    caller: Caller,
    lease: Lease,
    launch: Callable[[Plan], L],
    work: Callable[[Opening[L]], Awaitable[A | None]],
    keyed: idempotency.Keyed | None = None,
    conversation_id: uuid.UUID | None = None,  # the existing conversation `work` locks, if known
) -> L | A:
    """Run `work` in one transaction (see `_opened`). A retry by Idempotency-Key whose reply is
    still being generated (InFlight, by this process or another) waits until it is recorded and
    then looks again: the model is called once per key, however many retries arrive meanwhile."""
    while True:
        try:
            return await _opened(store, caller, lease, launch, work, keyed, conversation_id)
        except InFlight as busy:
            await _recorded(store, busy.family_id, busy.reply_id)


async def _recorded(store: Store, family_id: uuid.UUID, reply_id: uuid.UUID) -> None:
    # Polled: the reply may be another process's. Every pending reply ends, recorded by its owner
    # or, if that died, closed out when its lease runs out (record.close_expired).
    while True:
        async with store.reader() as tx:
            if not await pending.is_pending(tx, family_id, reply_id):
                return
        await asyncio.sleep(RETRY_POLL_SECONDS)


RETRY_POLL_SECONDS = 0.1


async def _opened(
    store: Store,
    caller: Caller,
    lease: Lease,
    launch: Callable[[Plan], L],
    work: Callable[[Opening[L]], Awaitable[A | None]],
    keyed: idempotency.Keyed | None,
    conversation_id: uuid.UUID | None,
) -> L | A:
    """Run `work` in one transaction; the reply it launched is confirmed once that commits.

    The reply is returned as soon as the transaction has nothing left but its COMMIT, which goes
    on in a task of its own: the caller can start its answer (a stream's headers) meanwhile. Every
    refusal has been decided by then; the COMMIT failing is all that may still happen, and the
    reply then settles with that error without ever having counted (Launched.discard). A caller
    cancelled before that point cancels the transaction; after it, the turn goes on without it.
    """
    written: asyncio.Future[L | A] = asyncio.get_running_loop().create_future()
    written.add_done_callback(_retrieved)  # a caller cancelled meanwhile never reads its error

    async def transaction() -> None:
        o: Opening[L] | None = None
        try:
            async with idempotency.claimed(store, caller, keyed, conversation_id) as claim:
                assert not isinstance(claim.found, idempotency.Replayed), "a key's fingerprint names its route"
                o = Opening(claim.tx, caller, lease, launch, claim.found)
                answered = await work(o)
                if answered is None:
                    assert o.launched is not None and o.plan is not None, "a turn launches its reply or is answered"
                    plan = o.plan  # the key names the reply it launched, from the same commit
                    await claim.launched(idempotency.Launched(plan.conversation_id, plan.user_message.id, plan.reply_id))
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
