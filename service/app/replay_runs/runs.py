"""Reading and cancelling replay runs: a run's progress, its comparison with the originals, a batch."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from service.app.caller import Caller
from service.app.replay_runs import report, tools
from service.app.replay_runs.plan import new_ids, step_id
from service.domain import views
from service.domain.errors import ConversationNotFound, InvalidRequest, ReplayRunFinished, ReplayRunNotFound
from service.domain.message import text_of
from service.store import replays
from service.store.events import Store, Tx


async def _found(tx: Tx, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> replays.RunRow:
    row = await replays.get(tx, caller.tenant, run_id)
    if row is None or row.source_conversation_id != conversation_id:
        raise ReplayRunNotFound(run_id=str(run_id))
    return row


async def get(store: Store, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> report.ReplayRun:
    async with store.reader() as tx:
        return report.run_view(await _found(tx, caller, conversation_id, run_id))


async def of_conversation(
    store: Store, caller: Caller, conversation_id: uuid.UUID, limit: int, cursor: str | None
) -> report.ReplayRunPage:
    """The runs that replay the conversation, and the one that wrote it (a fork or a new
    conversation), newest first. The cursor is opaque to callers: where the last page stopped."""
    before = _decode_cursor(cursor) if cursor else None
    async with store.reader() as tx:
        if await tx.get_scoped(caller.tenant, conversation_id) is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        found = await replays.of_conversation(tx, caller.tenant, conversation_id, before, limit + 1)
    last = found[limit - 1] if len(found) > limit else None
    return report.ReplayRunPage(
        items=[report.run_view(row) for row in found[:limit]],
        next_cursor=None if last is None else _encode_cursor(last.created_at, last.run_id),
    )


def _encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"r1:{created_at.isoformat()}|{run_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = text.partition(":")
        at, _, run_id = value.partition("|")
        if version != "r1":
            raise ValueError(version)
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None:
            raise ValueError(at)
        return created_at, uuid.UUID(run_id)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise InvalidRequest("The cursor is not one this service issued.", parameter="cursor") from exc


async def cancel(store: Store, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> report.ReplayRun:
    """Cancel a run: it stops at its next turn boundary (a turn being written is written first).
    A run that has ended: ReplayRunFinished."""
    async with store.transaction() as tx:
        row = await _found(tx, caller, conversation_id, run_id)
        if not await replays.cancel(tx, caller.tenant, run_id):
            raise ReplayRunFinished(run_id=str(run_id), status=row.status)
        found = await replays.get(tx, caller.tenant, run_id)
        assert found is not None
        return report.run_view(found)


async def diff(store: Store, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> report.ReplayDiff:
    """Every turn of the run, the original reply beside the new one (None until it is written), and
    every step where a model called tools, with how it was resolved."""
    async with store.snapshot() as tx:
        row = await _found(tx, caller, conversation_id, run_id)
        plan = report.plans.decode(row.plan)
        source = await tx.get_scoped(caller.tenant, row.source_conversation_id)
        target = await tx.get_scoped(caller.tenant, row.target_conversation_id)
        assert source is not None and target is not None, "conversations are never removed"
        path = await tx.message_path(source[1], plan.leaf_id)
        place = {m.id: i for i, m in enumerate(path)}
        steps = [[] if ref.user_id not in place else tools.turn_steps(path, place[ref.user_id]) for ref in plan.turns]
        replayed: dict[uuid.UUID, views.PathMessage] = {}
        if row.turns_done:
            last = row.turns_done - 1
            # The run's last message: the reply that ends its last turn, or the step it stopped at.
            ends = [new_ids(run_id, last)[1], *(step_id(run_id, last, k) for k in reversed(range(len(steps[last]))))]
            found = await tx.find_nodes(target[1], ends)
            leaf = next((i for i in ends if i in found), None)
            if leaf is not None:
                replayed = {m.id: m for m in await tx.message_path(target[1], leaf)}
    originals = {m.id: m for m in path}
    turns = []
    for index, ref in enumerate(plan.turns):
        user = originals.get(ref.user_id)
        original = None if ref.reply_id is None else originals.get(ref.reply_id)
        new = replayed.get(new_ids(run_id, index)[1])
        both = original is not None and new is not None
        turns.append(
            report.ReplayTurnDiff(
                index=index,
                user_message_id=ref.user_id,
                user_content="" if user is None else text_of(user),
                original=report.reply_side(original),
                replayed=report.reply_side(new),
                similarity=report.similarity(text_of(original), text_of(new)) if both else None,  # type: ignore[arg-type]
                steps=report.step_diffs(run_id, index, steps[index], replayed),
            )
        )
    return report.ReplayDiff(run=report.run_view(row), turns=turns)


async def batch(store: Store, caller: Caller, batch_id: uuid.UUID) -> report.ReplayBatch:
    async with store.reader() as tx:
        rows = await replays.of_batch(tx, caller.tenant, batch_id)
    if not rows:
        raise ReplayRunNotFound("The replay batch does not exist.", batch_id=str(batch_id))
    return report.batch_view(batch_id, rows)
