"""What a replay run reports: its progress, the comparison of its turns with the originals, a batch's summary."""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import msgspec

from service.app.replay_runs import tools
from service.app.replay_runs.plan import Into, RunPlan, new_ids, result_id, step_id
from service.domain import views
from service.domain.message import text_of
from service.store.replays import RunRow

plans = msgspec.json.Decoder(RunPlan)


class ReplayRun(msgspec.Struct, frozen=True, kw_only=True):
    """A replay run and how far it got. `status`: queued, running, finished, failed (a turn got no
    reply: `error` and `detail` say why), stopped (the new model asked for a tool call the path never
    recorded: `error` "unrecorded_tool_call", `detail` names the tool and its arguments; the turn
    is written up to the step that asked), or cancelled. The new turns are in `target_conversation_id`."""

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


class ReplayRunPage(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation's replay runs, newest first: those that replay it and the one that wrote it."""

    items: list[ReplayRun]
    next_cursor: str | None


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


class CallSide(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call of a step: its id, tool name and arguments as the model wrote them, and the text
    of its result on the path (None: none there)."""

    id: str
    name: str
    arguments: str
    result: str | None


class ReplySide(msgspec.Struct, frozen=True, kw_only=True):
    """One side of a turn's comparison (or of a step's: then `tool_calls` holds its calls)."""

    id: uuid.UUID
    content: str
    provider: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    finish_reason: str | None
    tool_calls: list[CallSide] = []


class UnrecordedCall(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: str


class ReplayStepDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Step `index` (0-based) of a turn where a model called tools: the original step and the new
    one, and how the new model's answer there was resolved (replay_runs/tools.py):
    `reused` (every call got its recorded result), `unrecorded` (a call the original step never
    recorded, named in `unrecorded`: the path stopped there), `diverged` (the new model answered
    text where the original called tools: that text is the turn's reply), or None (not reached:
    not yet, or the turn diverged or stopped before it)."""

    index: int
    original: ReplySide | None
    replayed: ReplySide | None
    resolution: Literal["reused", "unrecorded", "diverged"] | None
    unrecorded: list[UnrecordedCall] = []


class ReplayTurnDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Turn `index` (0-based): the user message, the original reply and the new one side by side
    (the messages that end each turn, calling no tool), how alike their texts are (difflib's ratio,
    0 to 1; None until both exist), and the steps where either model called tools."""

    index: int
    user_message_id: uuid.UUID
    user_content: str
    original: ReplySide | None
    replayed: ReplySide | None
    similarity: float | None
    steps: list[ReplayStepDiff] = []


class ReplayDiff(msgspec.Struct, frozen=True, kw_only=True):
    run: ReplayRun
    turns: list[ReplayTurnDiff]


def reply_side(message: views.Message | None, results: Mapping[str, views.Message] | None = None) -> ReplySide | None:
    """A message as one side of a comparison; with `results` (tool messages by the call they
    answer), its tool calls with their results."""
    if message is None:
        return None
    g = message.generation
    found = results or {}
    calls = [
        CallSide(id=call_id, name=call.name, arguments=call.arguments,
                 result=text_of(found[call_id]) if call_id in found else None)
        for call_id, call in tools.calls_of(message)
    ]  # fmt: skip
    return ReplySide(
        id=message.id,
        content=text_of(message),
        provider=None if g is None else g.provider,
        model=None if g is None else g.model,
        prompt_tokens=None if g is None else g.prompt_tokens,
        completion_tokens=None if g is None else g.completion_tokens,
        latency_ms=None if g is None else g.latency_ms,
        finish_reason=None if g is None else g.finish_reason,
        tool_calls=calls,
    )


def step_diffs(
    run_id: uuid.UUID, index: int, steps: list[tools.Step], replayed: Mapping[uuid.UUID, views.PathMessage]
) -> list[ReplayStepDiff]:
    """Turn `index`'s steps where a model called tools, original beside new (`replayed`: the run's
    new messages by id), each with its resolution."""
    new: list[views.PathMessage] = []
    while (found := replayed.get(step_id(run_id, index, len(new)))) is not None:
        new.append(found)
    reply = replayed.get(new_ids(run_id, index)[1])
    out = []
    for k in range(max(len(steps), len(new))):
        original = steps[k] if k < len(steps) else None
        mine = new[k] if k < len(new) else None
        if mine is None and (original is None or not original.calls):
            continue
        answers = {} if mine is None else {
            m.tool_call_id: m for j in range(len(tools.calls_of(mine)))
            if (m := replayed.get(result_id(run_id, index, k, j))) is not None and isinstance(m.tool_call_id, str)
        }  # fmt: skip
        resolution: Literal["reused", "unrecorded", "diverged"] | None = None
        unrecorded: list[UnrecordedCall] = []
        if mine is not None:
            resolution = "reused" if len(answers) == len(tools.calls_of(mine)) else "unrecorded"
            if resolution == "unrecorded":
                left = tools.answer(tools.calls_of(mine), tools.recorded(original))
                missing = left.calls if isinstance(left, tools.Unrecorded) else []
                unrecorded = [UnrecordedCall(name=c.name, arguments=c.arguments) for c in missing]
        elif reply is not None and k == len(new):
            resolution = "diverged"
        before = {} if original is None else {m.tool_call_id: m for m in original.results if isinstance(m.tool_call_id, str)}
        out.append(
            ReplayStepDiff(
                index=k,
                original=None if original is None else reply_side(original.message, before),
                replayed=reply_side(mine, answers),
                resolution=resolution,
                unrecorded=unrecorded,
            )
        )
    return out


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
