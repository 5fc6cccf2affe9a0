"""Following a reply from any process: the pieces its checkpoints hold, batch by batch as they are
written (each checkpoint's notification wakes the follower; a slow poll stands in when none comes),
until it ends; and, for a turn's resumed stream, the reply as it was recorded or why it failed,
read back from the log. A follower never touches the reply: only its owner generates, stops and
records it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.app.caller import Caller
from service.app.turn import progress
from service.app.turn.record import error_of
from service.domain import views
from service.domain.errors import ConversationNotFound, ConvtreeError, ReplyNotFound
from service.domain.message import text_of
from service.store import pending
from service.store import progress as checkpoints
from service.store.events import Store
from service.store.notify import Listener
from service.upstream import Said, TextDelta

# The longest a follower waits for a notification before it reads the checkpoints anyway. While the
# listener is reconnecting, waits are shorter still (notify.DEGRADED_WAIT_SECONDS).
FALLBACK_SECONDS = 1.0


async def checkpointed(
    store: Store, listener: Listener, family_id: uuid.UUID, reply_id: uuid.UUID, fallback: float = FALLBACK_SECONDS
) -> AsyncIterator[list[Said]]:
    """The reply's pieces as its checkpoints hold them, from the first, batch by batch as they are
    written (an empty batch after a wait that brought none), until the reply is no longer pending;
    every checkpoint written by then has been read. Any process can follow any reply: the pieces
    are the database's, not the owner's."""
    after = 0
    # Subscribed before the first read: a checkpoint written between a read and the wait wakes it.
    with listener.subscribe_reply(reply_id) as signal:
        while True:
            signal.clear()
            async with store.reader() as tx:
                # The pending row first: once it is gone, the record's transaction had written every
                # checkpoint (a kept reply's last one with it), so the read below sees them all.
                still = await checkpoints.pending_state(tx, family_id, reply_id)
                chunks = await checkpoints.chunks(tx, family_id, reply_id, after)
            batch: list[Said] = []
            for chunk in chunks:
                if chunk.chunk != after:
                    break  # never skip a checkpoint: a gap is read again on the next round
                batch.extend(progress.decode(chunk.pieces))
                after += 1
            yield batch
            if still is None:
                return
            await signal.wait(fallback)


@dataclass(frozen=True)
class Ended:
    """How a turn ended, as its stream's last event says it: the reply as recorded (None if the
    turn failed before any text) and, unless the reply is complete, the error its client was given."""

    reply: views.Message | None
    error: ConvtreeError | None


@dataclass(frozen=True)
class Located:
    """A turn's reply, found: the ids its stream opened with, and how it ended (None: still generating)."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    user_message_id: uuid.UUID
    reply_id: uuid.UUID
    provider: str | None
    model: str | None
    ended: Ended | None

    @property
    def text(self) -> str:
        """The recorded reply's text (what its stream's `delta` events carried)."""
        reply = None if self.ended is None else self.ended.reply
        return "" if reply is None else text_of(reply)


async def locate_reply(store: Store, caller: Caller, conversation_id: uuid.UUID, reply_id: uuid.UUID) -> Located:
    """The reply `reply_id` of a turn of the conversation: still being generated, recorded, or failed.
    A turn's stream names its reply once the turn is committed, and the reply is registered as
    pending in that commit, so a reply its client heard of is found whatever it has said so far."""
    async with store.reader() as tx:
        found = await tx.get_scoped(caller.tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        scope = found[1]
        family_id = scope.family_id
        # Pending first: once the row is gone, the reply (or the turn's failure) is in the log.
        row = await pending.find(tx, family_id, reply_id)
        if row is not None and row.conversation_id == conversation_id:
            return Located(conversation_id, family_id, row.user_message_id, reply_id, row.provider, row.model, None)
        # Not pending: its record was committed before that read, perhaps after the scope's (each
        # read here is a statement of its own), which would not show the reply: read the scope again.
        again = await tx.get_scoped(caller.tenant, conversation_id)
        assert again is not None, "a conversation is never removed"
        scope = again[1]
        reply = await tx.get_message(scope, reply_id)
        if reply is not None and reply.conversation_id == conversation_id and reply.generation is not None:
            g = reply.generation
            user = reply.parent_message_id
            assert user is not None, "a generated reply answers a message"
            ended = Ended(reply, _error_of(reply, conversation_id, user))
            return Located(conversation_id, family_id, user, reply_id, g.provider, g.requested_model, ended)
        if reply is None:
            failure = await pending.failed(tx, conversation_id, reply_id)
            if failure is not None:
                error = error_of(failure.kind, failure.detail)
                _name(error, failure.provider, conversation_id, failure.user_message_id, reply_id, stored=False)
                return Located(
                    conversation_id, family_id, failure.user_message_id, reply_id, failure.provider, failure.model,
                    Ended(None, error),
                )  # fmt: skip
    raise ReplyNotFound(reply_id=str(reply_id))


async def follow_reply(
    store: Store, listener: Listener, caller: Caller, located: Located, fallback: float = FALLBACK_SECONDS
) -> AsyncIterator[list[Said] | Ended]:
    """The reply's pieces from its first, as its checkpoints hold them while it is generated, then
    the rest of its text as recorded (a reply recorded already: all of it, at once), then how it
    ended. The text is the stored reply's, piece for piece as its own stream relayed it: only
    checkpointed text is ever relayed before the reply is recorded."""
    ended = located.ended
    said = 0
    if ended is None:
        async for batch in checkpointed(store, listener, located.family_id, located.reply_id, fallback):
            said += sum(len(p.text) for p in batch if isinstance(p, TextDelta))
            yield batch
        ended = (await locate_reply(store, caller, located.conversation_id, located.reply_id)).ended
        assert ended is not None, "a reply that is no longer pending is recorded, or its turn failed"
    rest = "" if ended.reply is None else text_of(ended.reply)[said:]
    if rest:
        yield [TextDelta(rest)]
    yield ended


def _error_of(reply: views.Message, conversation_id: uuid.UUID, user_message_id: uuid.UUID) -> ConvtreeError | None:
    """The error the reply's stream ended with: none for a complete reply."""
    g = reply.generation
    if g is None or g.interruption is None:
        return None
    error = error_of(g.interruption.kind, g.interruption.detail)
    _name(error, g.provider, conversation_id, user_message_id, reply.id, stored=True)
    return error


def _name(
    error: ConvtreeError,
    provider: str | None,
    conversation_id: uuid.UUID,
    user_message_id: uuid.UUID,
    reply_id: uuid.UUID,
    *,
    stored: bool,
) -> None:
    """Name the turn in the error, as relay._reported does for the reply's own stream."""
    error.context.update(
        provider=provider,
        conversation_id=str(conversation_id),
        user_message_id=str(user_message_id),
        assistant_message_id=str(reply_id),
        stored=stored,
    )

