"""Rows as typed records, one struct per row shape of queries.sql, and one converter from each
shape to the domain's own type. Nothing here reads a row by position."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import msgspec

from service.domain import views
from service.domain.events import Columns, Envelope, Sealed, message_metadata, with_payload
from service.domain.message import carried
from service.domain.tree import ConversationState, Node, Scope

R = TypeVar("R", bound=msgspec.Struct)


def records(shape: type[R], rows: Sequence[asyncpg.Record]) -> list[R]:
    """`rows` as `shape`s. The query's columns must be the struct's fields, by name and in order:
    checked on the first row, so each row is then built without a lookup per column (a deep
    context is thousands of rows)."""
    if rows:
        _check(shape, rows[0])
    return [shape(*r) for r in rows]


def record(shape: type[R], row: asyncpg.Record | None) -> R | None:
    if row is None:
        return None
    _check(shape, row)
    return shape(*row)


def _check(shape: type[msgspec.Struct], row: asyncpg.Record) -> None:
    _check_columns(shape.__name__, shape.__struct_fields__, row)


def _check_columns(name: str, fields: tuple[str, ...], row: asyncpg.Record) -> None:
    if tuple(row.keys()) != fields:
        raise TypeError(f"{name} has fields {fields}, the row {tuple(row.keys())}")


# --- conversations ------------------------------------------------------------------------------


class ConversationRow(msgspec.Struct, frozen=True):
    """get_conversation, list_conversations: a summary row of `conversations`."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    title: str | None
    metadata: str  # json text
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    created_at: datetime
    updated_at: datetime
    last_seq: int
    created_seq: int
    forked_from_conversation_id: uuid.UUID | None
    forked_from_message_id: uuid.UUID | None
    base_depth: int | None


class SummaryRow(ConversationRow, frozen=True):
    """conversation_as_of: a summary folded from the log, with what the audit compares too."""

    tenant: str
    last_hash: bytes


_metadata = msgspec.json.Decoder(dict[str, Any])


def conversation(row: ConversationRow) -> views.Conversation:
    forked_from = (
        None
        if row.forked_from_conversation_id is None or row.forked_from_message_id is None
        else views.ForkedFrom(conversation_id=row.forked_from_conversation_id, message_id=row.forked_from_message_id)
    )
    return views.Conversation(
        id=row.conversation_id,
        title=row.title,
        metadata=_metadata.decode(row.metadata),
        head_id=row.head_id,
        message_count=row.message_count,
        leaf_count=row.leaf_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_seq=row.last_seq,
        forked_from=forked_from,
    )


def scope(row: ConversationRow) -> Scope:
    """Which messages the conversation shows now, consistently with its summary."""
    return Scope(
        family_id=row.family_id,
        conversation_id=row.conversation_id,
        base_id=row.forked_from_message_id,
        base_depth=row.base_depth,
        upto=row.last_seq,
    )


# --- the first step of a write ------------------------------------------------------------------


class StateRow(msgspec.Struct, frozen=True):
    """begin_write: the locked summary, the transaction's time and the event numbers drawn."""

    family_id: uuid.UUID
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    last_seq: int
    last_hash: bytes
    now: datetime
    seqs: list[int]
    base_id: uuid.UUID | None
    base_depth: int | None


def state(conversation_id: uuid.UUID, row: StateRow | ReadStateRow) -> ConversationState:
    return carried(ConversationState, row, conversation_id=conversation_id)


class NodeRow(msgspec.Struct, frozen=True):
    """find_nodes (and begin_append's node_ columns): a message as a decision sees it."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    depth: int
    body_sha256: bytes
    payload: str
    visible: bool
    has_children: bool
    digest_key: bytes | None
    path_digest: bytes | None


class AppendRow(msgspec.Struct, frozen=True):
    """begin_append: begin_write's row, and one message as find_nodes sees it (None: none)."""

    state: StateRow
    node: NodeRow | None


class ReadStateRow(msgspec.Struct, frozen=True):
    """read_append: the summary as last committed, and the time of its last event."""

    family_id: uuid.UUID
    head_id: uuid.UUID | None
    message_count: int
    leaf_count: int
    last_seq: int
    last_hash: bytes
    updated_at: datetime
    base_id: uuid.UUID | None
    base_depth: int | None


class ReadRow(msgspec.Struct, frozen=True):
    """read_append: its summary, and one message as find_nodes sees it (None: none)."""

    state: ReadStateRow
    node: NodeRow | None


_NODE_COLUMNS = tuple(f"node_{name}" for name in NodeRow.__struct_fields__)


def append_records(rows: Sequence[asyncpg.Record]) -> list[AppendRow]:
    """begin_append's rows (begin_write's columns, then find_nodes' with a `node_` prefix, all NULL
    for no message), each cut into its two shapes where the `node_` columns begin."""
    if rows:
        _check_columns("AppendRow", StateRow.__struct_fields__ + _NODE_COLUMNS, rows[0])
    cut = len(StateRow.__struct_fields__)
    return [AppendRow(StateRow(*row[:cut]), None if row[cut] is None else NodeRow(*row[cut:])) for row in rows]


def read_records(rows: Sequence[asyncpg.Record]) -> list[ReadRow]:
    """read_append's rows, cut as append_records cuts begin_append's."""
    if rows:
        _check_columns("ReadRow", ReadStateRow.__struct_fields__ + _NODE_COLUMNS, rows[0])
    cut = len(ReadStateRow.__struct_fields__)
    return [ReadRow(ReadStateRow(*row[:cut]), None if row[cut] is None else NodeRow(*row[cut:])) for row in rows]


def node(row: NodeRow) -> Node:
    return carried(Node, row, metadata=message_metadata(row.payload))


class RootRow(msgspec.Struct, frozen=True):
    """find_root: the family's root message, enough to compare a retried creation's system message."""

    message_id: uuid.UUID
    role: str
    body_sha256: bytes
    digest_key: bytes | None


# --- messages -----------------------------------------------------------------------------------


class MessageRow(msgspec.Struct, frozen=True):
    """get_message, list_children, list_messages: a message, its body as served_body serves it."""

    seq: int
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    depth: int
    payload: str
    actor: str
    request_id: str | None
    created_at: datetime
    content: str | None  # withheld (None) once redacted
    redacted_at: datetime | None
    redacted_by: str | None
    redaction_reason: str | None
    redaction_erased: bool | None


def redaction(at: datetime | None, by: str | None, reason: str | None, erased: bool | None) -> views.Redaction | None:
    if at is None:
        return None
    return views.Redaction(at=at, by=by, reason=reason, erased=erased)  # type: ignore[arg-type]


def message(row: MessageRow) -> views.Message:
    """A message row as the message it is: its place from the columns, what it says from its role,
    body and payload (every payload field, by name: a field added to the message needs nothing here)."""
    return _message(views.Message, row)


M = TypeVar("M", bound=views.Message)


def _message(shape: type[M], row: MessageRow | PathRow, **place: Any) -> M:
    """`message` and `path_message`: a row of either as a `shape`, with its `place` (a path
    message's among its siblings)."""
    redacted = redaction(row.redacted_at, row.redacted_by, row.redaction_reason, row.redaction_erased)
    built = shape(
        metadata={},  # the payload's, as every field it holds: with_payload
        id=row.message_id,
        conversation_id=row.conversation_id,
        parent_message_id=row.parent_id,
        role=row.role,  # type: ignore[arg-type]
        content=views.REDACTED_CONTENT,  # what it says: its body, unless redacted (with_payload)
        depth=row.depth,
        seq=row.seq,
        created_at=row.created_at,  # type: ignore[arg-type]  # a path row off the path has none: never built
        redacted=redacted,
        **place,
    )
    return with_payload(built, row.payload, row.content if redacted is None else None)  # type: ignore[arg-type]


class PathRow(msgspec.Struct, frozen=True, gc=False):
    """message_path: a message on the path (on_path), or a child off it (ids, seq and depth only)."""

    seq: int
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str | None
    depth: int
    payload: str | None
    created_at: datetime | None
    content: str | None
    redacted_at: datetime | None
    redacted_by: str | None
    redaction_reason: str | None
    redaction_erased: bool | None
    sibling_count: int | None
    sibling_position: int | None
    on_path: bool


def path_message(row: PathRow, place: tuple[int, int]) -> views.PathMessage:
    """A path row as the message it is (as `message` builds one), at `place` (sibling count,
    position) among its siblings."""
    return _message(views.PathMessage, row, sibling_count=place[0], sibling_position=place[1])


class ServedRow(PathRow, frozen=True, gc=False):
    """message_path_served: a path row, and for a message the store writes itself (views.Written),
    its JSON after its content (`tail`), with neither payload nor time."""

    tail: bytes | None


# message_path_served's rows are read as they come (a deep context is thousands of them, and a
# struct per row would cost as much as the rest): by these positions, of columns checked by name.
_SERVED = {name: i for i, name in enumerate(ServedRow.__struct_fields__)}
SERVED_ON_PATH = _SERVED["on_path"]
SERVED_DEPTH = _SERVED["depth"]
SERVED_PARENT = _SERVED["parent_id"]
_ROLE, _CONTENT, _TAIL = _SERVED["role"], _SERVED["content"], _SERVED["tail"]
_encode = msgspec.json.encode
# Each role's opening of a written message, up to its content's value.
_OPENING: dict[str, bytes] = {}


def check_served(rows: Sequence[asyncpg.Record]) -> None:
    if rows:
        _check(ServedRow, rows[0])


def served(row: asyncpg.Record, place: tuple[int, int] | None = None) -> views.Served:
    """A message_path_served row as the message it is: written out when the store wrote its tail,
    else its view (as `path_message`); at `place` among its siblings when it is not the row's own."""
    tail: bytes | None = row[_TAIL]
    if tail is None:
        typed = ServedRow(*row)
        return path_message(typed, place or (typed.sibling_count, typed.sibling_position))  # type: ignore[arg-type]
    role: str = row[_ROLE]
    opening = _OPENING.get(role)
    if opening is None:
        opening = _OPENING.setdefault(role, b'{"role":' + _encode(role) + b',"content":')
    if place is not None:
        # The tail ends with the place: only ids, numbers and a time come before it.
        tail = tail[: tail.rindex(b',"sibling_count":')] + b',"sibling_count":%d,"sibling_position":%d}' % place
    return views.Written(role, msgspec.Raw(opening + _encode(row[_CONTENT]) + tail))


def served_path(rows: Sequence[asyncpg.Record]) -> list[views.Served]:
    """`served` for every row, each at its own place: the common case, written out in one pass."""
    out: list[views.Served] = []
    append = out.append
    for row in rows:
        tail = row[_TAIL]
        if tail is None:
            append(served(row))
        else:
            role = row[_ROLE]
            opening = _OPENING.get(role)
            if opening is None:
                opening = _OPENING.setdefault(role, b'{"role":' + _encode(role) + b',"content":')
            append(views.Written(role, msgspec.Raw(opening + _encode(row[_CONTENT]) + tail)))
    return out


class LeafRow(msgspec.Struct, frozen=True):
    """list_leaves: a branch tip."""

    message_id: uuid.UUID
    depth: int
    seq: int
    created_at: datetime


def leaf(row: LeafRow) -> views.Leaf:
    return views.Leaf(message_id=row.message_id, depth=row.depth, seq=row.seq, created_at=row.created_at)


class RedactionRow(msgspec.Struct, frozen=True):
    """find_redaction: a message's latest redaction."""

    redacted_at: datetime
    redacted_by: str
    redaction_reason: str
    redaction_erased: bool


# --- the log ------------------------------------------------------------------------------------


class EventRow(msgspec.Struct, frozen=True):
    """conversation_events, tenant_events: an `events` row as it was sealed."""

    seq: int
    tenant: str
    conversation_id: uuid.UUID
    family_id: uuid.UUID
    type: str
    message_id: uuid.UUID | None
    parent_id: uuid.UUID | None
    role: str | None
    depth: int | None
    body_sha256: bytes | None
    payload: str
    actor: str
    request_id: str | None
    created_at: datetime
    hash: bytes


class AuditRow(EventRow, frozen=True):
    """audit_events: an event, and the digest of its message's body as stored now (None: no body)."""

    body_digest: bytes | None


class ExportRow(EventRow, frozen=True):
    """export_events: an event, and its body and digest key where one may be served."""

    content: str | None
    digest_key: bytes | None
    blobs: str | None  # JSON: the parts out of line the body refers to, by hex digest


def sealed(row: EventRow, digest_key: bytes | None = None) -> Sealed:
    envelope = Envelope(
        seq=row.seq,
        tenant=row.tenant,
        conversation_id=row.conversation_id,
        family_id=row.family_id,
        actor=row.actor,
        request_id=row.request_id,
        created_at=row.created_at,
    )
    columns = Columns(row.type, row.message_id, row.parent_id, row.role, row.depth, row.body_sha256, row.payload)
    return Sealed(envelope, columns, row.hash, digest_key)
