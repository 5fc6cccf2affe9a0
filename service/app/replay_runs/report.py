"""What a replay run reports: its progress, the comparison of its turns with the originals, a batch's summary."""

from __future__ import annotations

import difflib
import uuid
from datetime import datetime

import msgspec

from service.app.replay_runs.plan import Into, RunPlan
from service.domain import views
from service.domain.message import text_of
from service.store.replays import RunRow

plans = msgspec.json.Decoder(RunPlan)


class ReplayRun(msgspec.Struct, frozen=True, kw_only=True):
    """A replay run and how far it got. `status`: queued, running, finished, failed (a turn got no
    reply: `error` and `detail` say why), stopped (the new model asked for a tool call the path never
    recorded), or cancelled. The new turns are in `target_conversation_id`."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    target_conversation_id: uuid.UUID
    into: Into
    status: str
    provider: str
    model: str
    turns_total: int
    turns_done: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    detail: str | None
    batch_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


def run_view(row: RunRow) -> ReplayRun:
    plan = plans.decode(row.plan)
    return ReplayRun(
        id=row.run_id,
        conversation_id=row.source_conversation_id,
        target_conversation_id=row.target_conversation_id,
        into=row.destination,  # type: ignore[arg-type]
        status=row.status,
        provider=plan.provider,
        model=plan.model,
        turns_total=row.turns_total,
        turns_done=row.turns_done,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        error=row.error,
        detail=row.detail,
        batch_id=row.batch_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class ReplySide(msgspec.Struct, frozen=True, kw_only=True):
    """One side of a turn's comparison."""

    id: uuid.UUID
    content: str
    provider: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    finish_reason: str | None


class ReplayTurnDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Turn `index` (0-based): the user message, the original reply and the new one side by side,
    and how alike their texts are (difflib's ratio, 0 to 1; None until both exist)."""

    index: int
    user_message_id: uuid.UUID
    user_content: str
    original: ReplySide | None
    replayed: ReplySide | None
    similarity: float | None


class ReplayDiff(msgspec.Struct, frozen=True, kw_only=True):
    run: ReplayRun
    turns: list[ReplayTurnDiff]


def reply_side(message: views.Message | None) -> ReplySide | None:
    if message is None:
        return None
    g = message.generation
    return ReplySide(
        id=message.id,
        content=text_of(message),
        provider=None if g is None else g.provider,
        model=None if g is None else g.model,
        prompt_tokens=None if g is None else g.prompt_tokens,
        completion_tokens=None if g is None else g.completion_tokens,
        latency_ms=None if g is None else g.latency_ms,
        finish_reason=None if g is None else g.finish_reason,
    )


def similarity(a: str, b: str) -> float:
    """How alike two texts are, 0 to 1 (difflib's ratio, on words, rounded to 3 places)."""
    return round(difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio(), 3)


class ReplayBatchItem(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation of a batch, and its run."""

    conversation_id: uuid.UUID
    run: ReplayRun


class ReplayBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of replay runs, one per conversation, and their totals."""

    id: uuid.UUID
    status: str  # running while any run is queued or running; else finished (whatever each run came to)
    conversations: int
    turns_total: int
    turns_done: int
    prompt_tokens: int
    completion_tokens: int
    items: list[ReplayBatchItem]


OPEN = ("queued", "running")


def batch_view(batch_id: uuid.UUID, rows: list[RunRow]) -> ReplayBatch:
    runs = [run_view(r) for r in rows]
    return ReplayBatch(
        id=batch_id,
        status="running" if any(r.status in OPEN for r in runs) else "finished",
        conversations=len(runs),
        turns_total=sum(r.turns_total for r in runs),
        turns_done=sum(r.turns_done for r in runs),
        prompt_tokens=sum(r.prompt_tokens for r in runs),
        completion_tokens=sum(r.completion_tokens for r in runs),
        items=[ReplayBatchItem(conversation_id=r.conversation_id, run=r) for r in runs],
    )
