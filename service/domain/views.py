"""Read models: what a conversation and its messages look like to a reader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.domain.events import Role


class Message(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_message_id: uuid.UUID | None
    role: Role
    content: str
    metadata: dict[str, Any]
    depth: int
    seq: int
    created_at: datetime


class PathMessage(Message, frozen=True, kw_only=True):
    """A message on a root-first path, with its place among its siblings ("2 / 3")."""

    sibling_count: int
    sibling_position: int


class Context(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    leaf_id: uuid.UUID | None
    depth: int  # messages on the full path, before windowing
    messages: list[PathMessage]


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


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    message_id: uuid.UUID
    depth: int
    seq: int
    created_at: datetime
