"""Stored events as readers see them: the typed feed view, and the export line that re-creates one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.domain.events import (
    Columns,
    Envelope,
    MessageAppended,
    Sealed,
    from_columns,
    message_payload_fields,
)

EXPORT_VERSION = 1


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a feed: its place in the log, who caused it, its link in the chain, and what it says."""

    seq: int
    conversation_id: uuid.UUID
    type: str
    created_at: datetime
    actor: str
    request_id: str | None
    hash: str  # hex SHA-256: this event's link in its conversation's chain
    payload: dict[str, Any]


def view(event: Sealed) -> EventView:
    return EventView(
        seq=event.envelope.seq,
        conversation_id=event.envelope.conversation_id,
        type=event.columns.type,
        created_at=event.envelope.created_at,
        actor=event.envelope.actor,
        request_id=event.envelope.request_id,
        hash=event.hash.hex(),
        payload=payload_view(event.columns),
    )


def payload_view(columns: Columns) -> dict[str, Any]:
    """What the event says, decoded through its typed struct. A message shows its place in the tree
    and its body's digest, never its content (the feed is metadata; content is read per message)."""
    try:
        event = from_columns(columns)
    except (KeyError, msgspec.ValidationError, msgspec.DecodeError):
        # An event type this version does not model yet (or a payload it cannot type): shown as stored.
        decoded = msgspec.json.decode(columns.payload)
        return decoded if isinstance(decoded, dict) else {"value": decoded}
    if isinstance(event, MessageAppended):
        view = {
            "message_id": str(event.message_id),
            "parent_message_id": None if event.parent_id is None else str(event.parent_id),
            "role": event.role,
            "depth": event.depth,
            "body_sha256": event.body_sha256.hex(),
            # metadata, and the generation record (which provider and model produced a reply, and
            # what it saw): every field the payload holds.
            **message_payload_fields(event),
        }
        return view
    fields: dict[str, Any] = msgspec.to_builtins(event)
    fields.pop("type", None)  # the tag repeats the event's type
    return fields


class ExportLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of an export: every column the event's hash covers, the hash, and the body if it exists.

    `seq` is where the event stood in the exporting database; the importer draws new numbers (the
    hash does not cover them). `content` is the body as stored (the text its digest covers: a string
    content, or the JSON of what the message says when its payload has `"body": "json"`), absent
    for events without a body and for withheld or erased bodies. `blobs` holds the large parts that
    body keeps out of line, by the hex SHA-256 its references name (service/domain/stored.py),
    written only for a body that has some: an export made before they existed reads as it did.
    """

    v: int
    seq: int
    conversation_id: uuid.UUID
    type: str
    message_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    role: str | None = None
    depth: int | None = None
    body_sha256: str | None = None  # hex
    payload: str  # the JSON text exactly as hashed
    actor: str
    request_id: str | None = None
    created_at: datetime
    hash: str  # hex
    content: str | None = None
    body_key: str | None = None  # hex: the key of a keyed body digest, with the content it proves
    blobs: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


def export_line(event: Sealed, content: str | None, blobs: dict[str, str] | None = None) -> ExportLine:
    c, e = event.columns, event.envelope
    return ExportLine(
        v=EXPORT_VERSION,
        seq=e.seq,
        conversation_id=e.conversation_id,
        type=c.type,
        message_id=c.message_id,
        parent_id=c.parent_id,
        role=c.role,
        depth=c.depth,
        body_sha256=None if c.body_sha256 is None else c.body_sha256.hex(),
        payload=c.payload,
        actor=e.actor,
        request_id=e.request_id,
        created_at=e.created_at,
        hash=event.hash.hex(),
        content=content,
        body_key=None if content is None or event.digest_key is None else event.digest_key.hex(),
        blobs=msgspec.UNSET if content is None or not blobs else blobs,
    )


def columns_of(line: ExportLine) -> Columns:
    """The line's columns. Raises ValueError on a digest that is not 64 hex digits."""
    digest = None if line.body_sha256 is None else _hex32(line.body_sha256, "body_sha256")
    return Columns(line.type, line.message_id, line.parent_id, line.role, line.depth, digest, line.payload)


def sealed_of(line: ExportLine, tenant: str, family_id: uuid.UUID) -> Sealed:
    """The line as an event of this database (its seq still the exporter's), with the hash it claims."""
    envelope = Envelope(
        seq=line.seq,
        tenant=tenant,
        conversation_id=line.conversation_id,
        family_id=family_id,
        actor=line.actor,
        request_id=line.request_id,
        created_at=line.created_at,
    )
    key = None if line.content is None or line.body_key is None else _hex32(line.body_key, "body_key")
    return Sealed(envelope, columns_of(line), _hex32(line.hash, "hash"), key)


def _hex32(text: str, name: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ValueError(f"{name} is not 64 hex digits")
    return value
