"""Auto-threading: which stored path a resent history continues, matched exactly on what each message says.

A stateless client (OpenAI's and Ollama's clients, most agents) sends the whole history with every
call. Two rules let the store keep one thread of it instead of a copy per call:

- `matched`: with a conversation named, how many of the sent messages are the path the conversation
  is continued from (root first). The sent messages are read as a resent history only if the first
  of them is the path's root, said exactly; otherwise they are new messages, appended as always.
- `path_digest`: a message's path digest is SHA-256(its parent's path digest || `said_key` of the
  message), the root's parent digest being empty; so one digest names a whole path, root to the
  message, and the tenant's index of them (message_paths, schema.sql) finds the path a sent history
  continues without reading any conversation.

What is matched (`said_key`): the canonical JSON of the message's role, content (a string, or its
parts as given), tool calls (ids, names and arguments as written), refusal, name and tool_call_id.
Not matched: metadata (convtree's annotation, which no model API sends back) and reasoning
(`reasoning_content`, `reasoning`: clients drop it when they resend a reply). An empty content (null,
"", []) and a null refusal are the same as an absent one, as SDKs write them either way.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from service.domain.events import MessageAppended
from service.domain.message import UNSET, Content, ToolCall, UnsetType, Utterance

# The parent digest of a root message: nothing before it.
ROOT = b""


class _Said(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The matched fields of a message, in this order, each only when said."""

    role: str
    content: Content | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


_encoder = msgspec.json.Encoder()


def _said_or_unset(value: Any) -> Any:
    return UNSET if value is None or value == "" or value == [] else value


def said_key(message: Utterance) -> bytes:
    """The canonical JSON of what `message` says, as matching compares it (see the module's docstring)."""
    return _encoder.encode(
        _Said(
            role=message.role,
            content=_said_or_unset(message.content),
            tool_calls=message.tool_calls,
            refusal=_said_or_unset(message.refusal),
            name=message.name,
            tool_call_id=message.tool_call_id,
        )
    )


def path_digest(parent: bytes, message: Utterance) -> bytes:
    """The path digest of `message` under a parent whose path digest is `parent` (ROOT for a root)."""
    return hashlib.sha256(parent + said_key(message)).digest()


def prefix_digests(messages: Sequence[Utterance]) -> list[bytes]:
    """The path digest of each prefix of `messages` read as a path from the root: [d(m0), d(m0,m1), …]."""
    digests: list[bytes] = []
    parent = ROOT
    for m in messages:
        parent = path_digest(parent, m)
        digests.append(parent)
    return digests


def path_digests(
    messages: Sequence[MessageAppended], known: Mapping[uuid.UUID, bytes | None]
) -> dict[uuid.UUID, bytes]:
    """The path digests of new messages, in the order they are written: each under its parent's
    digest, from `known` (the stored
    digests of the parents they hang under) or from an earlier message of `messages`. A message
    whose parent has no digest (written before digests were kept, or erased) gets none, and so
    does everything under it."""
    digests: dict[uuid.UUID, bytes] = {}
    for m in messages:
        if m.parent_id is None:
            parent: bytes | None = ROOT
        else:
            parent = digests.get(m.parent_id) or known.get(m.parent_id)
        if parent is not None:
            digests[m.message_id] = path_digest(parent, m)
    return digests


def matched(sent: Sequence[Utterance], path: Sequence[Utterance]) -> int:
    """How many of `sent` are the start of `path` (root first), said exactly: the length of their
    common prefix, or 0 when the first sent message is not the path's root (the sent messages are
    then new ones, not a history)."""
    n = 0
    for a, b in zip(sent, path, strict=False):
        if said_key(a) != said_key(b):
            break
        n += 1
    return n
