"""Writing decided events: each gets its envelope, takes its link in the chain, and is stored."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

import msgspec

from service.app.caller import Caller
from service.domain import tree
from service.domain.events import DIGEST_KEY_BYTES, Envelope, Event, Sealed, seal
from service.store.events import KnownStateWrite, Tx

# The number an event is sealed with when the statement that stores it draws its number: the hash
# does not cover it (service/domain/events.py, canonical_bytes), so the seal holds once it is known.
UNNUMBERED = 0


def new_digest_key() -> bytes:
    """A message's own random key for its body's digest (events.body_digest), stored beside the
    body and deleted with it on erasure."""
    return secrets.token_bytes(DIGEST_KEY_BYTES)


def envelopes(
    caller: Caller, conversation_id: uuid.UUID, family_id: uuid.UUID, now: datetime, seqs: list[int]
) -> list[Envelope]:
    """Where each new event stands: its sequence number, who caused it and when."""
    return [
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


async def write_events(
    tx: Tx,
    caller: Caller,
    state: tree.ConversationState,
    events: list[Event],
    now: datetime,
    seqs: list[int],
    bodies: dict[uuid.UUID, str],
) -> list[Sealed]:
    """Seal a decision's events after the conversation's chain and store them with its new state."""
    sealed = seal(
        state.last_hash,
        envelopes(caller, state.conversation_id, state.family_id, now, seqs[: len(events)]),
        events,
    )
    await tx.append_events(caller.tenant, tree.chained(tree.fold(state, events), sealed), sealed, bodies)
    return sealed


def seal_on_known(
    caller: Caller, known: tree.ConversationState, events: list[Event], now: datetime, content: str
) -> KnownStateWrite:
    """Seal a decision's one message event after the chain of `known` (a state remembered, not
    read under a lock), ready for Tx.append_messages_if_unchanged, which numbers it."""
    (envelope,) = envelopes(caller, known.conversation_id, known.family_id, now, [UNNUMBERED])
    (sealed,) = seal(known.last_hash, [envelope], events)
    return KnownStateWrite(caller.tenant, known.last_seq, tree.fold(known, events), sealed, content)


def numbered(write: KnownStateWrite, seq: int) -> tuple[Sealed, tree.ConversationState]:
    """A written event with the number it was stored under, and the state it left."""
    envelope = msgspec.structs.replace(write.sealed.envelope, seq=seq)
    sealed = msgspec.structs.replace(write.sealed, envelope=envelope)
    return sealed, tree.chained(write.state, [sealed])
