"""Forking: a new conversation that continues from any message of another, sharing its past."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.app.conversations import Created, answer, new_summary
from service.app.ids import new_id
from service.app.messages import KnownHead, KnownHeads
from service.domain import tree, views
from service.domain.errors import ConversationIdConflict, ConversationNotFound
from service.store.events import Store, Tx


class NewFork(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID | None = None
    title: str | None = None
    metadata: dict[str, Any] = {}


async def fork_conversation(
    store: Store,
    caller: Caller,
    source_id: uuid.UUID,
    message_id: uuid.UUID,
    new: NewFork,
    keyed: idempotency.Keyed | None = None,
    heads: KnownHeads | None = None,
) -> Created | idempotency.Replayed:
    """Fork, once per Idempotency-Key (a retry gets the stored answer). With `heads`, the state the
    new fork is in is remembered there once it commits, so that its first appends by this process
    go the grouped way (AppendGroup) instead of locking it first."""
    done = await idempotency.run(
        store, caller, keyed, lambda tx: _fork(tx, caller, source_id, message_id, new), lambda made: answer(made[0])
    )
    if isinstance(done, idempotency.Replayed):
        return done
    created, known = done
    if heads is not None and known is not None:
        heads.remember(caller.tenant, known)  # committed: safe to build on
    return created


async def fork(tx: Tx, caller: Caller, source_id: uuid.UUID, message_id: uuid.UUID, new: NewFork) -> Created:
    """Fork in the caller's transaction (see _fork)."""
    created, _ = await _fork(tx, caller, source_id, message_id, new)
    return created


async def _fork(
    tx: Tx, caller: Caller, source_id: uuid.UUID, message_id: uuid.UUID, new: NewFork
) -> tuple[Created, KnownHead | None]:
    """Fork `source_id` at `message_id`: one event and one summary row, whatever the message's depth;
    and the state it leaves the new fork in (None: a retry that found the fork it had made).

    The fork joins the source's family and sees the path root→message by reference. With a client
    `id`, a retry finds the fork it made (created=False); the same id used for anything else is a
    conflict. Only the new id is locked: the source's visible messages never change, so forking
    needs no lock on it.
    """
    fork_id = new.id or new_id()
    w = await writes.lock_new(tx, caller, fork_id, 1)
    if new.id is not None:
        found = await tx.get_conversation(caller.tenant, fork_id)
        if found is not None:
            _check_same(found[0], source_id, message_id, new)
            return Created(found[0], created=False), None
    source = await tx.get_scoped(caller.tenant, source_id)
    if source is None:
        raise ConversationNotFound(conversation_id=str(source_id))
    _, source_scope = source
    nodes = await tx.find_nodes(source_scope, [message_id])
    cmd = tree.Fork(
        conversation_id=fork_id,
        family_id=source_scope.family_id,
        source_conversation_id=source_id,
        source_message_id=message_id,
        title=new.title,
        metadata=new.metadata,
    )
    base = nodes.get(message_id)
    events = tree.decide_fork(cmd, base)
    assert base is not None  # decide_fork refuses a fork without one
    forked_from = views.ForkedFrom(conversation_id=source_id, message_id=message_id)
    state = await w.create(tree.fork_origin(cmd, base), events, new.title, new.metadata, forked_from)
    created = Created(new_summary(state, new.title, new.metadata, w.now, forked_from), created=True)
    return created, _known_after_fork(state, base, w.now)


def _known_after_fork(state: tree.ConversationState, base: tree.Node, at: datetime) -> KnownHead:
    """The new fork as its creation left it, its base as its head. The base was read in the source,
    where it may have children; the fork shows none under it (it is the fork's only leaf, as its
    state's `tips` say). The tool-call group open at the base is not read here (a round trip for
    every fork at an assistant or tool message): a tool message under it goes the locked way."""
    head = msgspec.structs.replace(base, has_children=False)
    return KnownHead(state, head, at, None, group_known=base.role not in ("assistant", "tool"))


def _check_same(found: views.Conversation, source_id: uuid.UUID, message_id: uuid.UUID, new: NewFork) -> None:
    same = (
        found.forked_from == views.ForkedFrom(conversation_id=source_id, message_id=message_id)
        and found.title == new.title
        and found.metadata == new.metadata
    )
    if not same:
        raise ConversationIdConflict(conversation_id=str(found.id))
