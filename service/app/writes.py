"""The write pipeline: lock a conversation, decide on the state the lock found, seal the decided
events after its chain, and store them. Every use case that writes goes through here, so that
envelopes, sealing and the state a write leaves are made in one place.

    w = await writes.lock(tx, caller, conversation_id)       # an existing conversation
    events = tree.decide_...(w.see(parent), ...)
    await w.write(events)

    n = await writes.lock_new(tx, caller, conversation_id, count)   # a conversation being created
    await n.create(tree.initial_state(cmd), events, title, metadata)

A message's body is stored as its event says it (stored.stored_bodies): the store keeps what a
decision decided, never a text given beside it.

The grouped append (service/app/messages.py, AppendGroup) decides on a state remembered rather
than locked; `seal_on_known` and `numbered` seal and number its writes the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from service.app.caller import Caller
from service.app.ids import random_bytes
from service.domain import threads, transfer, tree, views
from service.domain.errors import ConversationNotFound
from service.domain.events import DIGEST_KEY_BYTES, GENESIS_HASH, Envelope, Event, MessageAppended, Sealed, seal
from service.domain.stored import stored_bodies
from service.store import history
from service.store.events import KnownStateWrite, Tx
from service.store.responses import ResponseRow

# The number an event is sealed with when the statement that stores it draws its number: the hash
# does not cover it (service/domain/events.py, canonical_bytes), so the seal holds once it is known.
UNNUMBERED = 0


def new_digest_key() -> bytes:
    """A message's own random key for its body's digest (events.body_digest), stored beside the
    body and deleted with it on erasure."""
    return random_bytes(DIGEST_KEY_BYTES)


class Locked:
    """A conversation locked for a write in the caller's transaction: its state as the lock found
    it, the database's time, the numbers drawn for its new events, and the messages read with the
    lock. `after` is the state the last write left (the state found, until one is made). `paths`:
    the path digests of the messages read (or shown to a decision: `see`) and written, from
    which a new message's is made (threads.path_digests)."""

    def __init__(
        self,
        tx: Tx,
        caller: Caller,
        state: tree.ConversationState,
        now: datetime,
        seqs: list[int],
        nodes: dict[uuid.UUID, tree.Node],
    ) -> None:
        self.tx = tx
        self.caller = caller
        self.state = state
        self.now = now
        self.seqs = seqs
        self.nodes = nodes
        self.after = state
        self.paths: dict[uuid.UUID, bytes | None] = {n.message_id: n.path_digest for n in nodes.values()}

    @property
    def scope(self) -> tree.Scope:
        return tree.scope(self.state)

    def see(self, *nodes: tree.Node | None) -> tree.ConversationState:
        """The state, knowing which of `nodes` (messages a decision is shown) are leaves, so that
        the state the write leaves counts a child of theirs right (tree.seen)."""
        self.state = tree.seen(self.state, *nodes)
        self.after = tree.seen(self.after, *nodes)
        self.paths.update((n.message_id, n.path_digest) for n in nodes if n is not None)
        return self.state

    async def write(self, events: Sequence[Event]) -> list[Sealed]:
        """Seal decided events after the conversation's chain and store them, their bodies and the
        conversation's new summary. No events: nothing is written."""
        if not events:
            return []
        sealed = self._sealed(events)
        paths = self._paths(events)
        await self.tx.append_events(self.caller.tenant, self.after, sealed, stored_bodies(events), paths)
        return sealed

    async def write_turn(
        self,
        events: Sequence[Event],
        reply: tuple[uuid.UUID, uuid.UUID, str, str],
        owner: uuid.UUID,
        lease_seconds: float,
        around: uuid.UUID | None,
        response: ResponseRow | None = None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """`write`, and the turn's reply registered as pending (and its `response`'s row, if it is
        one) in the same round trip (see Tx.append_turn); returns the replies already pending
        `around` the new message's parent."""
        sealed = self._sealed(events)
        paths = self._paths(events)
        return await self.tx.append_turn(
            self.caller.tenant, self.after, sealed, stored_bodies(events), reply, owner, lease_seconds, around, paths,
            response,
        )  # fmt: skip

    def _paths(self, events: Sequence[Event]) -> dict[uuid.UUID, bytes]:
        made = threads.path_digests(_messages(events), self.paths)
        self.paths.update(made)
        return made

    def _sealed(self, events: Sequence[Event]) -> list[Sealed]:
        state = self.after
        ids = state.conversation_id, state.family_id
        sealed = _seal(self.caller, state.last_hash, *ids, self.now, self.seqs[: len(events)], events)
        self.after = tree.chained(_evolved(state, events), sealed)
        return sealed


async def lock(
    tx: Tx,
    caller: Caller,
    conversation_id: uuid.UUID,
    count: int = 1,
    ids: Sequence[uuid.UUID] = (),
    *,
    with_head: bool = False,
) -> Locked:
    """Lock the conversation for a write and draw `count` numbers for its new events; with `ids`
    or `with_head`, read those messages (and the head) under the lock in the same round trip.
    A conversation the caller's tenant does not have: ConversationNotFound."""
    if ids or with_head:
        begun = await tx.begin_append(caller.tenant, conversation_id, count, ids, with_head)
        if begun is not None:
            state, now, seqs, nodes = begun
            return Locked(tx, caller, state, now, seqs, nodes)
    else:
        found = await tx.begin_write(caller.tenant, conversation_id, count)
        if found is not None:
            state, now, seqs = found
            return Locked(tx, caller, state, now, seqs, {})
    raise ConversationNotFound(conversation_id=str(conversation_id))


class LockedNew:
    """A new conversation's id locked for its creation, with the numbers drawn for its events."""

    def __init__(self, tx: Tx, caller: Caller, conversation_id: uuid.UUID, now: datetime, seqs: list[int]) -> None:
        self.tx = tx
        self.caller = caller
        self.conversation_id = conversation_id
        self.now = now
        self.seqs = seqs

    async def create(
        self,
        start: tree.ConversationState,
        events: Sequence[Event],
        title: str | None,
        metadata: dict[str, Any],
        forked_from: views.ForkedFrom | None = None,
    ) -> tree.ConversationState:
        """Seal decided events as the new conversation's first and store them with its summary;
        returns the state they leave `start` (tree.initial_state, or tree.fork_origin for a fork)."""
        state, sealed = self._sealed(start, events)
        bodies = stored_bodies(events)
        paths = threads.path_digests(_messages(events), {})
        await self.tx.insert_conversation(
            self.caller.tenant, state, sealed, bodies, title, metadata, forked_from, paths
        )
        return state

    async def create_turn(
        self,
        start: tree.ConversationState,
        events: Sequence[Event],
        reply: tuple[uuid.UUID, uuid.UUID, str, str],
        owner: uuid.UUID,
        lease_seconds: float,
        response: ResponseRow | None = None,
    ) -> None:
        """`create` (untitled, no metadata) for a turn whose events make the conversation, with its
        reply registered as pending (and its `response`'s row, if it is one) in the same round
        trip (see Tx.create_turn)."""
        state, sealed = self._sealed(start, events)
        paths = threads.path_digests(_messages(events), {})
        await self.tx.create_turn(
            self.caller.tenant, state, sealed, stored_bodies(events), reply, owner, lease_seconds, paths, response
        )

    def _sealed(self, start: tree.ConversationState, events: Sequence[Event]) -> tuple[tree.ConversationState, list[Sealed]]:
        formed = _evolved(start, events)
        ids = formed.conversation_id, formed.family_id
        sealed = _seal(self.caller, GENESIS_HASH, *ids, self.now, self.seqs[: len(events)], events)
        return tree.chained(formed, sealed), sealed

    async def imported(self, plan: transfer.ImportPlan, family_id: uuid.UUID) -> None:
        """Store an exported conversation's events as they were written (their times, actors and
        hashes: sealed again, they come out the same), as the new conversation's, in `family_id`."""
        sealed = transfer.reseal(plan, self.caller.tenant, family_id, self.seqs)
        head = await history.import_conversation(self.tx, self.caller.tenant, sealed, plan.bodies)
        assert sealed[-1].hash == plan.head_hash and head == plan.head_hash, "re-sealing changed the chain"


async def lock_new(tx: Tx, caller: Caller, conversation_id: uuid.UUID, count: int) -> LockedNew:
    """Lock a new conversation's id for its creation and draw `count` numbers for its events."""
    now, seqs = await tx.begin_create(caller.tenant, conversation_id, count)
    return LockedNew(tx, caller, conversation_id, now, seqs)


def seal_on_known(
    caller: Caller,
    known: tree.ConversationState,
    events: Sequence[Event],
    now: datetime,
    parent: tree.Node | None,
) -> KnownStateWrite | None:
    """Seal a decision's one message event after the chain of `known` (a state remembered, not
    read under a lock), ready for Tx.append_messages_if_unchanged, which numbers it; `parent`: the
    message it goes under (its path digest makes the new message's). None for a message with parts
    stored out of line: that statement writes bodies only, so it goes the locked way."""
    (body,) = stored_bodies(events).values()
    if body.blobs:
        return None
    ids = known.conversation_id, known.family_id
    (sealed,) = _seal(caller, known.last_hash, *ids, now, [UNNUMBERED], events)
    known_paths = {} if parent is None else {parent.message_id: parent.path_digest}
    path = next(iter(threads.path_digests(_messages(events), known_paths).values()), None)
    state = _evolved(known, events)
    return KnownStateWrite(caller.tenant, known.last_seq, state, sealed, body.text, path_digest=path)


def numbered(write: KnownStateWrite, seq: int) -> tuple[Sealed, tree.ConversationState]:
    """A written event with the number it was stored under, and the state it left."""
    envelope = msgspec.structs.replace(write.sealed.envelope, seq=seq)
    sealed = msgspec.structs.replace(write.sealed, envelope=envelope)
    return sealed, tree.chained(write.state, [sealed])


def _messages(events: Sequence[Event]) -> list[MessageAppended]:
    return [e for e in events if isinstance(e, MessageAppended)]


def _evolved(before: tree.ConversationState, events: Sequence[Event]) -> tree.ConversationState:
    """The state decided events leave `before`, before they take their place in the chain
    (tree.chained). The one place a write's new state is made."""
    return tree.fold(before, list(events))


def _seal(
    caller: Caller,
    previous_hash: bytes,
    conversation_id: uuid.UUID,
    family_id: uuid.UUID,
    now: datetime,
    seqs: list[int],
    events: Sequence[Event],
) -> list[Sealed]:
    """Each event in its envelope (its number, who caused it and when), hashed after the last."""
    envelopes = [
        Envelope(
            seq=seq,
            tenant=caller.tenant,
            conversation_id=conversation_id,
            family_id=family_id,
            actor=caller.actor,
            request_id=caller.request_id,
            created_at=now,
        )
        for seq in seqs
    ]
    return seal(previous_hash, envelopes, list(events))
