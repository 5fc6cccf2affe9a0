"""Read models: what a conversation and its messages look like to a reader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.domain.events import Generation, Role


REDACTED_CONTENT = "[redacted]"  # what a redacted message's content reads as, wherever it is served


class Redaction(msgspec.Struct, frozen=True, kw_only=True):
    """Why a message's content is withheld: the latest `message_redacted` event that names it."""

    at: datetime
    by: str
    reason: str
    erased: bool  # the body itself was deleted (right to erasure), not only hidden


# omit_defaults: `redacted` appears only on redacted messages, so every other message reads as before.
# gc=False: a message holds only values, never itself, and a deep context makes ten thousand of them.
class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_message_id: uuid.UUID | None
    role: Role
    content: str
    metadata: dict[str, Any]
    depth: int
    seq: int
    created_at: datetime
    redacted: Redaction | None = None
    generation: Generation | None = None  # on a reply a model generated: provider, usage, timing, context


class PathMessage(Message, frozen=True, kw_only=True):
    """A message on a root-first path, with its place among its siblings ("2 / 3")."""

    sibling_count: int
    sibling_position: int


class Context(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    leaf_id: uuid.UUID | None
    depth: int  # messages on the full path, before windowing
    messages: list[PathMessage]


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
