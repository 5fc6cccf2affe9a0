"""Wire types of the REST API: request bodies with their limits, and response shapes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from service.domain import views
from service.domain.events import Role

MAX_CONTENT_CHARS = 1_000_000
MAX_TITLE_CHARS = 500

# PostgreSQL's text cannot hold U+0000, nor UTF-8 a lone surrogate: every string of every JSON body,
# metadata included, is refused with either (service/api/bodies.py). The pattern says so in the
# OpenAPI document for the fields it can be attached to.
NO_NUL = r"^[^\x00]*$"

Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS, pattern=NO_NUL)]
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
    content: Content
    metadata: Metadata = {}
    expected_head: uuid.UUID | None = None


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
