"""Wire types of the REST API: request bodies with their limits, and response shapes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from service.domain import views
from service.domain.events import Role
from service.domain.message import UNSET, Part, ToolCall, UnsetType

MAX_CONTENT_CHARS = 1_000_000
MAX_TITLE_CHARS = 500

# PostgreSQL's text cannot hold U+0000, nor UTF-8 a lone surrogate: every string of every JSON body,
# metadata included, is refused with either (service/api/bodies.py). The pattern says so in the
# OpenAPI document for the fields it can be attached to.
NO_NUL = r"^[^\x00]*$"

Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS, pattern=NO_NUL)]
# A message's content: a string (which may be empty only when tool calls carry the message:
# message.check), an ordered list of parts, or null. Its size limits are service/domain/stored.py's.
MessageContent = Annotated[
    Annotated[str, msgspec.Meta(max_length=MAX_CONTENT_CHARS, pattern=NO_NUL)] | list[Part] | None,
    msgspec.Meta(
        description="A string, or an ordered list of content parts (`text`, `image_url`, `input_audio`, "
        "`file`; any other `type` is kept as given), or null when `tool_calls` carry the message. Absent "
        "and null read back as sent. A base64 payload of 16 KiB or more is stored once, out of line; a "
        "part's payload is at most 8 MiB (413)."
    ),
]
Title = Annotated[str, msgspec.Meta(max_length=MAX_TITLE_CHARS, pattern=NO_NUL)]
Metadata = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="Any JSON object; stored and returned as given. No string in it, keys included, may "
        "hold U+0000 or a lone surrogate (422)."
    ),
]


class CreateConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: uuid.UUID | None = None
    title: Title | None = None
    metadata: Metadata = {}
    system: Content | None = msgspec.field(default=None)


class AppendMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    role: Role
    content: MessageContent | UnsetType = UNSET
    metadata: Metadata = {}
    expected_head: uuid.UUID | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    reasoning_content: str | None | UnsetType = UNSET
    reasoning: dict[str, Any] | UnsetType = UNSET


class MoveHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message_id: uuid.UUID


class ForkConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: uuid.UUID | None = None
    title: Title | None = None
    metadata: Metadata = {}


class ConversationPage(msgspec.Struct, kw_only=True):
    items: list[views.Conversation]
    next_cursor: str | None


class Leaves(msgspec.Struct, kw_only=True):
    conversation_id: uuid.UUID
    head_id: uuid.UUID | None
    leaves: list[views.Leaf]


class Children(msgspec.Struct, kw_only=True):
    message_id: uuid.UUID
    children: list[views.Message]


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str
    schema_version: str | None = None
