"""Read models: what a conversation and its messages look like to a reader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.domain.events import Generation, MessageAppended
from service.domain.message import Utterance, said


REDACTED_CONTENT = "[redacted]"  # what a redacted message's content reads as, wherever it is served


class Redaction(msgspec.Struct, frozen=True, kw_only=True):
    """Why a message's content is withheld: the latest `message_redacted` event that names it."""

    at: datetime
    by: str
    reason: str
    erased: bool  # the body itself was deleted (right to erasure), not only hidden


# omit_defaults: `redacted` appears only on redacted messages, so every other message reads as before
# (and a field added to Utterance later appears only on messages that have it).
# gc=False: a message holds only values, never itself, and a deep context makes ten thousand of them.
class Message(Utterance, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """A stored message as a reader sees it: what it says, where it stands, and when it was written."""

    metadata: dict[str, Any]  # no default here: always served, even empty
    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_message_id: uuid.UUID | None
    depth: int
    seq: int
    created_at: datetime
    redacted: Redaction | None = None
    generation: Generation | None = None  # on a reply a model generated: provider, usage, timing, context


class PathMessage(Message, frozen=True, kw_only=True):
    """A message on a root-first path, with its place among its siblings ("2 / 3")."""

    sibling_count: int
    sibling_position: int


def message_of(event: MessageAppended, conversation_id: uuid.UUID, seq: int, created_at: datetime) -> Message:
    """A message just appended (its event, which holds its text), as a reader will see it."""
    return Message(
        **said(event),
        id=event.message_id,
        conversation_id=conversation_id,
        parent_message_id=event.parent_id,
        depth=event.depth,
        seq=seq,
        created_at=created_at,
        generation=event.generation,
    )


class Context(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    conversation_id: uuid.UUID
    leaf_id: uuid.UUID | None
    depth: int  # messages on the full path, before windowing
    messages: list[PathMessage]
    # The ids of the tool calls in `messages` still without their results (calls.unanswered), in
    # path order; absent when there are none. A model is not shown such a context (IncompleteToolCalls).
    pending_tool_calls: list[str] = []


class Written(msgspec.Struct, frozen=True, gc=False):
    """A path message already written as its PathMessage's JSON (what the store can write without
    building the view: a string said by a role other than tool, nothing else, not redacted), and the
    role that windowing reads. It has no tool calls and answers none."""

    role: str
    json: msgspec.Raw


# A path message as a context read serves it: a view, or its JSON already written.
Served = PathMessage | Written


class ServedContext(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A Context as it is sent: the same fields, each message's JSON written once (views.Context
    documents its shape; its encoding is the same bytes)."""

    conversation_id: uuid.UUID
    leaf_id: uuid.UUID | None
    depth: int
    messages: list[msgspec.Raw]
    pending_tool_calls: list[str] = []


class ForkedFrom(msgspec.Struct, frozen=True, kw_only=True):
    """Where a fork came from: it inherits that conversation's path from the root to that message."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    created_at: datetime
    updated_at: datetime
    last_seq: int
    forked_from: ForkedFrom | None = None


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    message_id: uuid.UUID
    depth: int
    seq: int
    created_at: datetime
