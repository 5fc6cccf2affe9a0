"""Redaction rules: when withdrawing (or erasing) a message's content records an event, and how a
stored response that still quotes the content is scrubbed."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.domain import views
from service.domain.errors import MessageNotFound
from service.domain.events import Event, MessageRedacted
from service.domain.message import BODY_FIELDS
from service.domain.tree import ConversationState, Node


class RedactMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: uuid.UUID
    reason: str
    erase: bool = False


def decide_redact(
    state: ConversationState, target: Node | None, current: views.Redaction | None, cmd: RedactMessage
) -> list[Event]:
    """Redact a message of this conversation.

    Redacting is idempotent: a message already redacted records nothing more, unless this request
    erases a body that was only hidden so far (erasure can follow a redaction, never be undone).
    """
    if target is None:
        raise MessageNotFound(message_id=str(cmd.message_id))
    if current is not None and (current.erased or not cmd.erase):
        return []
    return [MessageRedacted(message_id=cmd.message_id, reason=cmd.reason, erase=cmd.erase)]


def scrub(document: Any, message_id: uuid.UUID, content: str | None, redacted: views.Redaction) -> Any:
    """`document` (decoded JSON) with every rendition of the message replaced by its redacted one.

    A message object (one whose `id` is the message's and that has a `content`) gets the placeholder
    and the redaction; any other object whose `content` is exactly the message's content gets the
    placeholder too, whatever shape the response that carried it had. Other fields are left alone
    (a short content may well equal some role or title).
    """
    mid = str(message_id)
    marker = msgspec.to_builtins(redacted)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            if out.get("id") == mid and any(n in out for n in BODY_FIELDS):
                for name in BODY_FIELDS:  # what it said, withheld as a read withholds it
                    out.pop(name, None)
                out["content"] = views.REDACTED_CONTENT
                out["redacted"] = marker
            elif content is not None and out.get("content") == content:
                out["content"] = views.REDACTED_CONTENT
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(document)
