"""The wire as a client sees it: convtree's responses as msgspec structs.

Defined here, not imported from the service, because a client is the other side of the wire: it
ships without the server. Unknown fields are ignored, so newer servers stay readable.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool"]


class Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ForkedFrom(Struct):
    conversation_id: uuid.UUID
    message_id: uuid.UUID


class Conversation(Struct):
    id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    forked_from: ForkedFrom | None = None


class ConversationPage(Struct):
    items: list[Conversation]
    next_cursor: str | None


class Interruption(Struct):
    kind: str
    detail: str


class ContextRun(Struct):
    """Consecutive messages of the path a reply was shown: `count` of them, `first_id` to `last_id`."""

    first_id: uuid.UUID
    last_id: uuid.UUID
    count: int


class Generation(Struct):
    provider: str
    model: str
    requested_model: str
    finish_reason: str | None
    latency_ms: float
    first_token_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    response_id: str | None = None
    params: dict[str, Any] = {}
    context_ids: list[uuid.UUID] = []  # replies recorded before `context` existed; empty since
    context: list[ContextRun] | None = None  # the context, as runs along the reply's path, root first
    interruption: Interruption | None = None


class Redaction(Struct):
    at: datetime
    by: str
    reason: str
    erased: bool


class Message(Struct):
    """A stored message. `content` is a string, a list of content parts, or None (absent or null:
    an assistant message whose tool calls carry it). The other fields of what a message says are
    None when the message does not say them: `tool_calls` (an assistant's, as Chat Completions
    writes them), `tool_call_id` (the call a tool message answers), `name`, `refusal`,
    `reasoning_content` and the opaque `reasoning`."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_message_id: uuid.UUID | None
    role: Role
    metadata: dict[str, Any]
    depth: int
    seq: int
    created_at: datetime
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: dict[str, Any] | None = None
    generation: Generation | None = None
    redacted: Redaction | None = None


class PathMessage(Message, kw_only=True, frozen=True):
    """A message on a path, with its place among its siblings (for "< 2/3 >" switches)."""

    sibling_count: int
    sibling_position: int


class Children(Struct):
    message_id: uuid.UUID
    children: list[Message]


class Context(Struct):
    conversation_id: uuid.UUID
    leaf_id: uuid.UUID | None
    depth: int
    messages: list[PathMessage]


class Tree(Struct):
    conversation_id: uuid.UUID
    head_id: uuid.UUID | None
    messages: list[Message]


class Leaf(Struct):
    message_id: uuid.UUID
    depth: int
    seq: int
    created_at: datetime


class Leaves(Struct):
    conversation_id: uuid.UUID
    head_id: uuid.UUID | None
    leaves: list[Leaf]


class Event(Struct):
    seq: int
    conversation_id: uuid.UUID
    type: str
    payload: dict[str, Any]
    actor: str
    request_id: str | None
    hash: str
    created_at: datetime


class EventPage(Struct):
    items: list[Event]
    next_after: int


class AuditReport(Struct):
    valid: bool
    events_checked: int
    bodies_checked: int
    bodies_erased: int
    head_hash: str | None
    first_invalid_seq: int | None = None
    reason: str | None = None
    detail: str | None = None


class TurnStarted(Struct):
    """A streamed turn's first event: its ids, before the model says anything."""

    conversation_id: uuid.UUID
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    provider: str | None
    model: str | None


class TurnResult(TurnStarted, kw_only=True, frozen=True):
    user_message: Message
    assistant_message: Message


class Delta(Struct):
    """A piece of a streamed reply."""

    text: str


class Done(Struct):
    """A streamed reply's end: the reply as stored, with its `generation`."""

    message: Message


class Health(Struct):
    status: str
    schema_version: str | None = None


class Problem(Struct):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    context: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


class StreamProblem(Problem, kw_only=True, frozen=True):
    message: Message | None = None


# Windows of a turn's context: send one as `window=` (the whole path, its last messages, or a budget).
def full_window() -> dict[str, Any]:
    return {"strategy": "full"}


def last_window(messages: int) -> dict[str, Any]:
    return {"strategy": "last", "messages": messages}


def tokens_window(max_tokens: int) -> dict[str, Any]:
    return {"strategy": "tokens", "max_tokens": max_tokens}
