"""A reply's progress as it is checkpointed (service/store/progress.py): the pieces received, as
JSON, and what the first checkpoint says beside them (`Started`); read back into what was said, to
record a reply whose owner died (record.close_expired) or to resume a stream (responses)."""

from __future__ import annotations

from typing import Any

import msgspec

from service.app.turn.plan import ReplyForm
from service.domain.events import Generation
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
