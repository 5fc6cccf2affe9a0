"""Events: the immutable facts in the log, their canonical encoding and their hash chain."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import msgspec

from service.domain.message import BODY_FIELDS, OWN_COLUMNS, UNSET, Body, Utterance, said_in
from service.domain.message import Role as Role  # re-exported: the log's columns name roles too

GENESIS_HASH = bytes(32)


class ConversationCreated(msgspec.Struct, frozen=True, tag="conversation_created", kw_only=True):
    title: str | None = None
    metadata: dict[str, Any] = {}


class Interruption(msgspec.Struct, frozen=True, kw_only=True):
    """Why a reply was cut short: a stable snake_case kind, and words for people."""

    kind: str  # client_disconnected, shutdown, record_delayed, or the upstream error (upstream_timeout…)
    detail: str


class ContextRun(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive messages of the path a reply was shown: `count` of them, `first_id` to `last_id`."""

    first_id: uuid.UUID
    last_id: uuid.UUID
    count: int


def context_runs(path: Sequence[uuid.UUID], sent: Sequence[uuid.UUID]) -> list[ContextRun]:
    """The messages `sent` (a subsequence of `path`, both root first) as runs of consecutive path
    messages: one run when the whole path was sent, two when a window kept the system message and
    the tail, and so on."""
    where = {message_id: i for i, message_id in enumerate(path)}
    runs: list[ContextRun] = []
    first = last = previous = None
    count = 0
    for message_id in sent:
        at = where[message_id]
        if previous is not None and at == previous + 1:
            last, count = message_id, count + 1
        else:
            if first is not None and last is not None:
                runs.append(ContextRun(first_id=first, last_id=last, count=count))
            first, last, count = message_id, message_id, 1
        previous = at
    if first is not None and last is not None:
        runs.append(ContextRun(first_id=first, last_id=last, count=count))
    return runs


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """How a model produced a reply: who answered, how fast, at what cost, and what it was shown."""

    provider: str
    model: str  # as the provider reported it (else the model asked for)
    requested_model: str
    finish_reason: str | None  # the provider's, or "interrupted" when the reply was cut short
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float  # from sending the request to the end of the reply
    first_token_ms: float | None = None  # from sending the request to the first piece of text
    response_id: str | None = None  # the provider's id of the response
    # The messages sent as context, root first, as replies recorded them before `context` existed.
    # Empty on newer replies: a list of every id made each reply of a chain of depth n carry n ids,
    # so a chain's log grew with the square of its depth.
    context_ids: list[uuid.UUID] = []
    # The messages sent as context, root first, as runs along the reply's path (context_runs): one
    # run when the whole path was sent. Written on every reply since; absent on older ones, which
    # encode exactly as they did.
    context: list[ContextRun] | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] = {}  # the sampling parameters that were set
    interruption: Interruption | None = None  # set when finish_reason is "interrupted"
    # True when convtree cut the reply at its cap (finish_reason "length"). Written only then, so a
    # reply that was not cut encodes exactly as it did before the field existed.
    truncated: bool | msgspec.UnsetType = msgspec.UNSET
    # The reply this one generated again, in a replay run (service/app/replay_runs): written only
    # on such a reply, so every other reply encodes exactly as it did before the field existed.
    replay_of: uuid.UUID | msgspec.UnsetType = msgspec.UNSET


class MessageAppended(Utterance, frozen=True, tag="message_appended", kw_only=True):
    """A message took its place in the tree: what it says (its Utterance), where, and its body's digest.

    What it says (its body: message.BODY_FIELDS) is stored apart (bodies), not in the event's
    columns: an event decoded from a log row alone (from_columns) says what the body its reader
    passes says; without one, "" for a string body, nothing (every body field absent) for a JSON one.
    A JSON body is recorded in the payload (`"body": "json"`, written only then), so the chain proves
    how its text is read."""

    message_id: uuid.UUID
    parent_id: uuid.UUID | None
    depth: int
    body_sha256: bytes
    generation: Generation | None = None  # set on a reply a model generated (service/app/turns.py)
    # The key of a keyed body digest (body_digest): kept beside the body, never in the log (the
    # payload does not carry it), and destroyed with the body when it is erased. None on messages
    # written before digests were keyed, and on events read back from the log.
    digest_key: bytes | None = None


class HeadMoved(msgspec.Struct, frozen=True, tag="head_moved", kw_only=True):
    message_id: uuid.UUID
    previous_id: uuid.UUID | None = None


class ConversationForked(msgspec.Struct, frozen=True, tag="conversation_forked", kw_only=True):
    """A conversation is created as a fork: it inherits the path root→`source_message_id` (its
    base, which is also its first head) by reference, and writes only its own messages after it."""

    source_conversation_id: uuid.UUID
    source_message_id: uuid.UUID
    title: str | None = None
    metadata: dict[str, Any] = {}


class MessageRedacted(msgspec.Struct, frozen=True, tag="message_redacted", kw_only=True):
    """A message's content is withdrawn from every read; with `erase`, its body is deleted too.
    The message's event, its digest and the chain stay: the log still proves what was said when."""

    message_id: uuid.UUID
    reason: str
    erase: bool = False


class TurnFailed(msgspec.Struct, frozen=True, tag="turn_failed", kw_only=True):
    """A turn got no reply: its user message stays, and `reply_id` (announced to the caller when the
    turn began) names a message that will never exist."""

    reply_id: uuid.UUID
    user_message_id: uuid.UUID  # the message the reply would have answered
    provider: str
    model: str
    error: str  # what went wrong, as a stable snake_case kind (upstream_timeout, cancelled, abandoned…)
    detail: str


class ConversationUpdated(msgspec.Struct, frozen=True, tag="conversation_updated", kw_only=True):
    """The conversation's metadata is now `metadata` (the Conversations API's update)."""

    metadata: dict[str, Any]


class ConversationDeleted(msgspec.Struct, frozen=True, tag="conversation_deleted", kw_only=True):
    """The conversation's tombstone: the Conversations API no longer serves it. The log, and the
    native API, keep it (bodies are erased only by a redaction that asks for it)."""


class MessageHidden(msgspec.Struct, frozen=True, tag="message_hidden", kw_only=True):
    """The message is no longer listed among the conversation's items (a Conversations item
    deleted inside the path); it stays in the tree, the log and the native reads."""

    message_id: uuid.UUID


Event = (
    ConversationCreated
    | MessageAppended
    | HeadMoved
    | MessageRedacted
    | ConversationForked
    | TurnFailed
    | ConversationUpdated
    | ConversationDeleted
    | MessageHidden
)


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
    "message_redacted": MessageRedacted,
    "conversation_forked": ConversationForked,
    "turn_failed": TurnFailed,
    "conversation_updated": ConversationUpdated,
    "conversation_deleted": ConversationDeleted,
    "message_hidden": MessageHidden,
}


def _payload_fields(required_metadata: bool) -> list[tuple[str, Any] | tuple[str, Any, Any]]:
    """A message payload's fields: the Utterance's own (all but role and content, which have a column
    and a body), then the generation record."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(Utterance):
        if f.name in OWN_COLUMNS:
            continue
        if f.name == "metadata" and required_metadata:
            fields.append((f.name, f.type))  # always written, even empty
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type, msgspec.field(default=f.default)))
    return [*fields, ("generation", Generation | None, None), ("body", _BodyKind, UNSET)]


# The payload's `body`: "json" when the message's body is the JSON of its said fields
# (message.body_of), absent when it is a string content alone (every message before there were others).
_BodyKind = Literal["json"] | msgspec.UnsetType


# Written with omit_defaults: `metadata` is always there (every message event ever written has it),
# every later field only when set, so a field added to Utterance changes no stored event's bytes or
# hash. A message without a generation keeps the payload it always had: `{"metadata":…}`.
# (Typed Any: their fields are Utterance's, known only once it is defined.)
_PayloadOut: Any = msgspec.defstruct(
    "MessagePayload", _payload_fields(True), frozen=True, kw_only=True, omit_defaults=True
)
_PayloadIn: Any = msgspec.defstruct("MessagePayloadIn", _payload_fields(False), frozen=True, kw_only=True)
_message_payload: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_PayloadIn)
_payload_encoder = msgspec.json.Encoder()


def message_metadata(payload: str) -> dict[str, Any]:
    """The metadata of a message, from its event's payload column."""
    metadata: dict[str, Any] = _message_payload.decode(payload).metadata
    return metadata


# The payload of most messages (no metadata, no generation): read without decoding, since a deep
# context reads thousands of them.
_EMPTY_MESSAGE_PAYLOAD = '{"metadata":{}}'


def _payload(event: MessageAppended) -> Any:
    fields = {name: getattr(event, name) for name in _PAYLOAD_OWN}
    return _PayloadOut(**fields, body="json" if is_json_body(event) else UNSET)


def is_json_body(message: Utterance) -> bool:
    """Whether `message`'s body is JSON (message.body_of): anything but a string content alone."""
    return not isinstance(message.content, str) or any(getattr(message, n) is not UNSET for n in BODY_FIELDS[1:])


def encode_message_payload(event: MessageAppended) -> str:
    """The payload column of a message's event: its fields besides role, content and tree position."""
    return _payload_encoder.encode(_payload(event)).decode()


def message_payload_fields(event: MessageAppended) -> dict[str, Any]:
    """The payload of a message's event as JSON values: what encode_message_payload writes."""
    fields: dict[str, Any] = msgspec.to_builtins(_payload(event))
    return fields


def decode_message_payload(payload: str) -> dict[str, Any]:
    """A message payload's fields by name, defaults filled in: every field of the Utterance that the
    payload holds, the generation record (None unless a model wrote it), and `body` (see _BodyKind)."""
    if payload == _EMPTY_MESSAGE_PAYLOAD:
        return {"metadata": {}, "body": UNSET}  # every other field at its default
    fields: dict[str, Any] = msgspec.structs.asdict(_message_payload.decode(payload))
    return fields


def said_beside_body(message: Utterance | None = None, payload: str | None = None) -> dict[str, Any]:
    """What a message says outside its body (its payload's Utterance fields, and whether its body is
    JSON), from the message or from its event's payload: equal for a message and its stored event."""
    if payload is not None:
        fields = decode_message_payload(payload)
        return {n: fields.get(n, UNSET) for n in (*_UTTERANCE_PAYLOAD, "body")}
    assert message is not None
    return {**{n: getattr(message, n) for n in _UTTERANCE_PAYLOAD}, "body": "json" if is_json_body(message) else UNSET}


# The payload's fields a message (an event, a read model) has by the same name: all but `body`.
_PAYLOAD_OWN: tuple[str, ...] = tuple(n for n in _PayloadIn.__struct_fields__ if n != "body")
_PAYLOAD_FIELDS = _PAYLOAD_OWN
_UTTERANCE_PAYLOAD: tuple[str, ...] = tuple(n for n in _PAYLOAD_OWN if n != "generation")
S = TypeVar("S", bound=msgspec.Struct)


def with_payload(message: S, payload: str, body: str | None = None) -> S:
    """`message`, just built from its row's columns with every payload field at its default, given
    the fields its event's `payload` holds: each by name, from one decode, so that a field added to
    Utterance is read back without a reader naming it; and, given its stored `body` text, what that
    says (its content, or, for a JSON body, every said field, message.said_in).

    A deep context reads thousands of messages, so the common empty payload is not decoded, and the
    fields are set on `message` itself, which no one else holds yet, rather than copied into another
    (msgspec.structs.replace takes twice the time)."""
    if payload == _EMPTY_MESSAGE_PAYLOAD:
        if body is not None:
            msgspec.structs.force_setattr(message, "content", body)
        return message
    decoded = _message_payload.decode(payload)
    for name in _PAYLOAD_FIELDS:
        msgspec.structs.force_setattr(message, name, getattr(decoded, name))
    if body is not None:
        for name, value in said_in(Body(body, decoded.body == "json")).items():
            msgspec.structs.force_setattr(message, name, value)
    return message


def event_type(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def to_columns(event: Event) -> Columns:
    """A message's tree position gets columns of its own (the walk and the indexes need them);
    every other field of every event goes into the payload."""
    if isinstance(event, MessageAppended):
        payload = encode_message_payload(event)
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


def from_columns(columns: Columns, body: str | None = None) -> Event:
    """The event a log row records; what a message says is its `body` (the stored text), which the
    row does not hold (see MessageAppended)."""
    if columns.type == "message_appended":
        fields = decode_message_payload(columns.payload)
        json = fields.pop("body") == "json"
        said: dict[str, Any] = said_in(Body(body, json)) if body is not None else {} if json else {"content": ""}
        return MessageAppended(
            message_id=columns.message_id,  # type: ignore[arg-type]
            parent_id=columns.parent_id,
            role=columns.role,  # type: ignore[arg-type]
            depth=columns.depth,  # type: ignore[arg-type]
            body_sha256=columns.body_sha256,  # type: ignore[arg-type]
            **said,
            **fields,
        )
    return msgspec.json.decode(columns.payload, type=_PAYLOAD_TYPES[columns.type])  # type: ignore[return-value]


MAX_SEQ = 2**63 - 1  # events.seq is a bigint: no event, cursor or position lies beyond it


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
    """An event ready for the log: envelope, columns and its link in the conversation's chain,
    and for a message the key of its body's digest, which is stored with the body, not the event."""

    envelope: Envelope
    columns: Columns
    hash: bytes
    digest_key: bytes | None = None


def seal(previous_hash: bytes, envelopes: list[Envelope], events: list[Event]) -> list[Sealed]:
    """Chain `events` (one envelope each, in order) after `previous_hash`."""
    sealed = []
    for envelope, event in zip(envelopes, events, strict=True):
        columns = to_columns(event)
        previous_hash = chain_hash(previous_hash, envelope, columns)
        key = event.digest_key if isinstance(event, MessageAppended) else None
        sealed.append(Sealed(envelope, columns, previous_hash, key))
    return sealed


DIGEST_KEY_BYTES = 32


def body_digest(content: str, key: bytes | None = None) -> bytes:
    """The digest a message's event records of its body: SHA-256(key || UTF-8 content) with the
    message's own random key, so that the digest left after an erasure (which deletes the key with
    the body) confirms no guess of the content. Without a key: the plain SHA-256 that messages
    written before digests were keyed recorded, kept so their events verify as they always did.
    The key has a fixed length, so a key and a content never read as another pair's."""
    if key is None:
        return hashlib.sha256(content.encode()).digest()
    if len(key) != DIGEST_KEY_BYTES:
        raise ValueError(f"a digest key is {DIGEST_KEY_BYTES} bytes")
    return hashlib.sha256(key + content.encode()).digest()


def _str_or_none(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)
