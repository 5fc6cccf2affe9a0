"""A reply's progress as it is checkpointed (service/store/progress.py): the pieces received, as
JSON, and what the first checkpoint says beside them (`Started`); read back into what was said, to
record a reply whose owner died (record.close_expired) or to resume a stream (responses). And a
recorded reply as the pieces of a stream of it (`whole`), for a retry answered with a stream."""

from __future__ import annotations

from typing import Any

import msgspec

from service.app.turn.plan import ReplyForm
from service.domain import views
from service.domain.events import Generation
from service.domain.message import FunctionToolCall, text_of
from service.upstream import ReasoningDelta, RefusalDelta, Said, TextDelta, ToolCallDelta

# Checkpoints are written at most this often by default (Settings.reply_checkpoint_seconds).
CHECKPOINT_SECONDS = 0.1


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """What a reply's record needs beside its pieces, written with its first checkpoint: its
    generation as it stood then (provider, models, context, params, first token), the form it is
    stored in, and whether its checkpoints are kept once it is recorded (a background response's,
    whose stream stays resumable)."""

    generation: Generation
    reply_form: ReplyForm = "given"
    keep: bool = False


def encode(pieces: list[Said]) -> bytes:
    """Pieces as JSON arrays, one per piece, in order: ["t", text], ["r", reasoning], ["x", refusal],
    ["c", index, id, type, name, arguments] (a tool call's fragment)."""
    out: list[list[Any]] = []
    for piece in pieces:
        if isinstance(piece, ToolCallDelta):
            out.append(["c", piece.index, piece.id, piece.type, piece.name, piece.arguments])
        elif isinstance(piece, ReasoningDelta):
            out.append(["r", piece.text])
        elif isinstance(piece, RefusalDelta):
            out.append(["x", piece.text])
        else:
            out.append(["t", piece.text])
    return msgspec.json.encode(out)


def decode(raw: bytes) -> list[Said]:
    pieces: list[Said] = []
    for item in msgspec.json.decode(raw, type=list[list[Any]]):
        kind = item[0]
        if kind == "c":
            pieces.append(ToolCallDelta(item[1], item[2], item[3], item[4], item[5]))
        elif kind == "r":
            pieces.append(ReasoningDelta(item[1]))
        elif kind == "x":
            pieces.append(RefusalDelta(item[1]))
        else:
            pieces.append(TextDelta(item[1]))
    return pieces


def encode_started(started: Started) -> bytes:
    return msgspec.json.encode(started)


def decode_started(raw: bytes) -> Started:
    return msgspec.json.decode(raw, type=Started)


def whole(reply: views.Message) -> list[Said]:
    """A recorded reply as the pieces of a stream of it, each part whole in one piece: its reasoning,
    its text, its refusal, then each of its tool calls."""
    pieces: list[Said] = []
    if isinstance(reply.reasoning_content, str) and reply.reasoning_content:
        pieces.append(ReasoningDelta(reply.reasoning_content))
    if text := text_of(reply):
        pieces.append(TextDelta(text))
    if isinstance(reply.refusal, str) and reply.refusal:
        pieces.append(RefusalDelta(reply.refusal))
    if isinstance(reply.tool_calls, list):
        for index, call in enumerate(reply.tool_calls):
            if isinstance(call, FunctionToolCall):
                pieces.append(ToolCallDelta(index, call.id, "function", call.function.name, call.function.arguments))
    return pieces
