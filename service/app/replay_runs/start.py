"""Starting replay runs: the path chosen and checked, the fork made, the run queued, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from service.app import conversations, forks, idempotency
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.replay_runs import report
from service.app.replay_runs.plan import Into, RunPlan, Target, choose_turns
from service.domain.errors import ConversationNotFound, InvalidRequest, MessageNotFound
from service.store import replays
from service.store.events import Store, Tx
from service.upstream import Registry


@dataclass(frozen=True)
class Limits:
    """The bounds replay runs work within (service/config.py says each)."""

    max_turns: int = 200
    per_tenant: int = 2
    workers: int = 4
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    batch_max: int = 1000


class NewReplay(msgspec.Struct, frozen=True, kw_only=True):
    leaf_id: uuid.UUID | None = None  # the path root→leaf (a leaf or any message; default: the head)
    start_message_id: uuid.UUID | None = None  # default: the root
    target: Target = msgspec.field(default_factory=Target)
    into: Into = "fork"
    title: str | None = None  # of the fork (or new conversation) the turns go into
    metadata: dict[str, Any] = {}


class NewBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The heads of many conversations: those listed, or those whose metadata holds `metadata`."""

    conversation_ids: list[uuid.UUID] | None = None
    metadata: dict[str, Any] | None = None
    target: Target = msgspec.field(default_factory=Target)
    into: Into = "fork"


async def start(
    store: Store,
    registry: Registry,
    limits: Limits,
    caller: Caller,
    conversation_id: uuid.UUID,
    new: NewReplay,
    keyed: idempotency.Keyed | None,
) -> report.ReplayRun | idempotency.Replayed:
    """Queue a run, once per Idempotency-Key (a retry gets the run it started)."""

    async def operation(tx: Tx) -> report.ReplayRun:
        provider, model = registry.resolve(new.target.provider, new.target.model)
        row = await _queue(tx, caller, limits, conversation_id, new, provider.name, model, None)
        return report.run_view(row)

    return await idempotency.run(store, caller, keyed, operation, lambda run: (201, run))


async def start_batch(
    store: Store, registry: Registry, limits: Limits, caller: Caller, new: NewBatch, keyed: idempotency.Keyed | None
) -> report.ReplayBatch | idempotency.Replayed:
    """Queue one run per conversation, all or none: a conversation that cannot be replayed fails
    the batch, and the problem names it."""
    if (new.conversation_ids is None) == (new.metadata is None):
        raise InvalidRequest(
            "Give either conversation_ids or metadata, the filter the conversations' metadata must hold."
        )
    if new.conversation_ids is not None and not 0 < len(new.conversation_ids) <= limits.batch_max:
        raise InvalidRequest(
            f"A batch replays 1 to {limits.batch_max} conversations.", max_conversations=limits.batch_max
        )
    if new.conversation_ids is not None and len(set(new.conversation_ids)) != len(new.conversation_ids):
        raise InvalidRequest("conversation_ids lists a conversation twice.")

    async def operation(tx: Tx) -> report.ReplayBatch:
        provider, model = registry.resolve(new.target.provider, new.target.model)
        ids = new.conversation_ids
        if ids is None:
            filter_json = msgspec.json.encode(new.metadata).decode()
            ids = await replays.conversations_by_metadata(tx, caller.tenant, filter_json, limits.batch_max + 1)
            if not ids:
                raise InvalidRequest("No conversation's metadata holds the filter: nothing to replay.")
            if len(ids) > limits.batch_max:
                raise InvalidRequest(f"More than {limits.batch_max} conversations match the filter.",
                                     max_conversations=limits.batch_max)  # fmt: skip
        batch_id = new_id()
        rows = []
        for cid in ids:
            one = NewReplay(target=new.target, into=new.into)
            try:
                rows.append(await _queue(tx, caller, limits, cid, one, provider.name, model, batch_id))
            except (InvalidRequest, ConversationNotFound) as exc:
                exc.context.setdefault("conversation_id", str(cid))
                raise
        return report.batch_view(batch_id, rows)

    return await idempotency.run(store, caller, keyed, operation, lambda batch: (201, batch))


async def _queue(
    tx: Tx,
    caller: Caller,
    limits: Limits,
    conversation_id: uuid.UUID,
    new: NewReplay,
    provider: str,
    model: str,
    batch_id: uuid.UUID | None,
) -> replays.RunRow:
    scoped = await tx.get_scoped(caller.tenant, conversation_id)
    if scoped is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    conversation, scope = scoped
    leaf_id = new.leaf_id or conversation.head_id
    if leaf_id is None:
        raise InvalidRequest("The conversation has no messages: nothing to replay.")
    path = await tx.message_path(scope, leaf_id)
    if not path:
        raise MessageNotFound(message_id=str(leaf_id))
    chosen = choose_turns(path, new.start_message_id, new.into, new.target.system, limits.max_turns)
    run_id = new_id()
    metadata = {**new.metadata, "replay_run_id": str(run_id)} if new.into == "fork" else {}
    anchor_id: uuid.UUID | None
    if new.into == "branches":
        assert chosen.base is not None  # choose_turns refuses branches from the root
        target_id, anchor_id = conversation_id, chosen.base.id
    elif chosen.base is not None and new.target.system is None:
        fork = forks.NewFork(title=new.title, metadata=metadata)
        created = await forks.fork(tx, caller, conversation_id, chosen.base.id, fork)
        target_id, anchor_id = created.conversation.id, chosen.base.id
    else:
        fresh = conversations.NewConversation(title=new.title, metadata=metadata, system=new.target.system)
        created = await conversations.create(tx, caller, fresh)
        target_id, anchor_id = created.conversation.id, created.conversation.head_id
    plan = RunPlan(
        leaf_id=leaf_id,
        provider=provider,
        model=model,
        params=new.target.params,
        window=new.target.window,
        system=new.target.system,
        turns=chosen.turns,
    )
    return await replays.insert(
        tx,
        replays.NewRun(
            tenant=caller.tenant,
            run_id=run_id,
            batch_id=batch_id,
            source_conversation_id=conversation_id,
            target_conversation_id=target_id,
            anchor_id=anchor_id,
            destination=new.into,
            plan=msgspec.json.encode(plan),
            turns_total=len(chosen.turns),
            actor=caller.actor,
            request_id=caller.request_id,
        ),
    )
