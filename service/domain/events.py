"""Events: the immutable facts in the log, their canonical encoding and their hash chain."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]

GENESIS_HASH = bytes(32)


class ConversationCreated(msgspec.Struct, frozen=True, tag="conversation_created", kw_only=True):
    title: str | None = None
    metadata: dict[str, Any] = {}


class MessageAppended(msgspec.Struct, frozen=True, tag="message_appended", kw_only=True):
    message_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: Role
    depth: int
    body_sha256: bytes
    metadata: dict[str, Any] = {}


class HeadMoved(msgspec.Struct, frozen=True, tag="head_moved", kw_only=True):
    message_id: uuid.UUID
    previous_id: uuid.UUID | None = None


Event = ConversationCreated | MessageAppended | HeadMoved


class Columns(msgspec.Struct, frozen=True, array_like=True):
    """An event as the columns of one `events` row (besides its envelope)."""

    type: str
    message_id: uuid.UUID | None
    parent_id: uuid.UUID | None
    role: str | None
    depth: int | None
    body_sha256: bytes | None
    payload: str  # JSON text, stored as `json` (not `jsonb`) so the hashed text is the text read back


_PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {
    "conversation_created": ConversationCreated,
    "head_moved": HeadMoved,
}


class _MessagePayload(msgspec.Struct, frozen=True):
    metadata: dict[str, Any] = {}


_message_payload = msgspec.json.Decoder(_MessagePayload)


def message_metadata(payload: str) -> dict[str, Any]:
    """The metadata of a message, from its event's payload column."""
    return _message_payload.decode(payload).metadata


def event_type(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def to_columns(event: Event) -> Columns:
    """A message's tree position gets columns of its own (the walk and the indexes need them);
    every other field of every event goes into the payload."""
    if isinstance(event, MessageAppended):
        payload = msgspec.json.encode(_MessagePayload(metadata=event.metadata)).decode()
        return Columns(
            "message_appended",
            event.message_id,
            event.parent_id,
            event.role,
            event.depth,
            event.body_sha256,
            payload,
        )
    fields = msgspec.structs.asdict(event)
    return Columns(event_type(event), None, None, None, None, None, msgspec.json.encode(fields).decode())


def from_columns(columns: Columns) -> Event:
    if columns.type == "message_appended":
        return MessageAppended(
            message_id=columns.message_id,  # type: ignore[arg-type]
            parent_id=columns.parent_id,
            role=columns.role,  # type: ignore[arg-type]
            depth=columns.depth,  # type: ignore[arg-type]
            body_sha256=columns.body_sha256,  # type: ignore[arg-type]
            metadata=message_metadata(columns.payload),
        )
    return msgspec.json.decode(columns.payload, type=_PAYLOAD_TYPES[columns.type])  # type: ignore[return-value]


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event stands in the log and who caused it."""

    seq: int
    tenant: str
    conversation_id: uuid.UUID
    family_id: uuid.UUID
    actor: str
    request_id: str | None
    created_at: datetime


def canonical_bytes(envelope: Envelope, columns: Columns) -> bytes:
    """The canonical encoding an event's hash covers: what the event says, in a fixed order.

    Where the event sits in this particular database (its global `seq`, the tenant, the family's
    internal id) is left out, so that an exported conversation verifies, and keeps its hashes, in
    any convtree instance it is imported into. The order of events is covered by the chain itself.
    """
    return msgspec.json.encode(
        [
            str(envelope.conversation_id),
            columns.type,
            _str_or_none(columns.message_id),
            _str_or_none(columns.parent_id),
            columns.role,
            columns.depth,
            None if columns.body_sha256 is None else columns.body_sha256.hex(),
            columns.payload,
            envelope.actor,
            envelope.request_id,
            envelope.created_at.isoformat(),
        ]
    )


def chain_hash(previous: bytes, envelope: Envelope, columns: Columns) -> bytes:
    """hash(n) = SHA-256(hash(n-1) || canonical(n)): altering or removing any event breaks every later link."""
    return hashlib.sha256(previous + canonical_bytes(envelope, columns)).digest()


class Sealed(msgspec.Struct, frozen=True):
    """An event ready for the log: envelope, columns and its link in the conversation's chain."""

    envelope: Envelope
    columns: Columns
    hash: bytes


def seal(previous_hash: bytes, envelopes: list[Envelope], events: list[Event]) -> list[Sealed]:
    """Chain `events` (one envelope each, in order) after `previous_hash`."""
    sealed = []
    for envelope, event in zip(envelopes, events, strict=True):
        columns = to_columns(event)
        previous_hash = chain_hash(previous_hash, envelope, columns)
        sealed.append(Sealed(envelope, columns, previous_hash))
    return sealed


def body_digest(content: str) -> bytes:
    return hashlib.sha256(content.encode()).digest()


def _str_or_none(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)
