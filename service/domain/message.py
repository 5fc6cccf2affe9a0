"""The message: what one says (role, content, tool calls, reasoning, metadata), defined once and
extended by every other shape.

Commands (tree.Append), the event (events.MessageAppended), the read model (views.Message), the
context a model is shown (ContextItem) and the upstream request (upstream.base.ChatRequest) all
subclass `Utterance`, so a field added here reaches each of them; only the edges convert (an API
body to a command: one function per door; a ChatRequest to a provider's wire format: one per
provider).

A message is stored exactly as it was said: read back (context, tree, export, replay) it is the
same JSON, field for field. Every field but `role` and `metadata` is optional, and a field not said
stays absent (`msgspec.UNSET`), so that an absent field and a `null` one read back as they came.

Where the fields live:
- `BODY_FIELDS` (what is said: content, tool calls, refusal, reasoning) form the message's body,
  stored apart from the log, recorded by digest, withheld by a redaction and deleted by an erasure.
  A message whose body is a string `content` alone keeps the body it always had: that string, with
  the digest of its text, so every event written before these fields existed verifies unchanged.
  Any other body is the canonical JSON of its fields (`body_of`), and the digest covers that text.
- Every other field but `role` (`name`, `tool_call_id`, `metadata`) is written into the event's
  payload (events.encode_message_payload), only when set, so old payloads keep their bytes.

Adding a field: give it a default that means "absent" (`msgspec.UNSET`), and add it to
`BODY_FIELDS` if it says something a redaction must withhold.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Literal, TypeVar

import msgspec

from service.domain.errors import InvalidMessage

Role = Literal["system", "developer", "user", "assistant", "tool"]

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType


class FunctionCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The function a model asks to be called: its name, and its arguments as the JSON text the
    model wrote (kept as a string, never parsed: a model may write invalid JSON, and it is stored
    as said)."""

    name: str
    arguments: str


class FunctionToolCall(msgspec.Struct, frozen=True, tag_field="type", tag="function", forbid_unknown_fields=True):
    """`{"id", "type": "function", "function": {"name", "arguments"}}`"""

    id: str
    function: FunctionCall


class CustomCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    input: str


class CustomToolCall(msgspec.Struct, frozen=True, tag_field="type", tag="custom", forbid_unknown_fields=True):
    """`{"id", "type": "custom", "custom": {"name", "input"}}`"""

    id: str
    custom: CustomCall


ToolCall = FunctionToolCall | CustomToolCall

# A content part, kept as given (its keys in their order, unknown part types too): an object with a
# string `type`. The known types are checked by `check`.
Part = dict[str, Any]
Content = str | list[Part] | None


class Utterance(msgspec.Struct, frozen=True):
    """What a message says: who says it, its content (a string, or an ordered list of parts, or null
    when tool calls carry the message), the assistant's tool calls, the tool call a tool message
    answers, and the caller's metadata (any JSON object)."""

    role: Role
    content: Content | UnsetType = UNSET
    metadata: dict[str, Any] = {}
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET  # assistant only
    tool_call_id: str | UnsetType = UNSET  # tool only: the call this message answers
    refusal: str | None | UnsetType = UNSET  # assistant only
    reasoning_content: str | None | UnsetType = UNSET  # as vLLM/DeepSeek-style servers return it
    reasoning: dict[str, Any] | UnsetType = UNSET  # opaque reasoning (encrypted content), kept as given


# The fields that say something: the body, stored apart from the log (see the module's docstring).
BODY_FIELDS = ("content", "tool_calls", "refusal", "reasoning_content", "reasoning")
# The fields of an Utterance that have a column or the body, not a place in the event's payload.
OWN_COLUMNS = ("role", *BODY_FIELDS)


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message's body when it is more than a string: its said fields, in this order, each only
    when set. Decoding it back gives each field as it was given."""

    content: Content | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    reasoning_content: str | None | UnsetType = UNSET
    reasoning: dict[str, Any] | UnsetType = UNSET


_body_encoder = msgspec.json.Encoder()
_body_decoder = msgspec.json.Decoder(_Body)


class Body(msgspec.Struct, frozen=True):
    """A message's body as stored: `text`, either the message's string content itself (`json`
    false: every message that has only a string content, as every body ever was) or the canonical
    JSON of its said fields (`json` true). The event's digest covers exactly `text`."""

    text: str
    json: bool = False


def body_of(message: Utterance) -> Body:
    """The body `message` is stored as (see Body)."""
    content = message.content
    if isinstance(content, str) and all(getattr(message, name) is UNSET for name in BODY_FIELDS[1:]):
        return Body(content)
    fields = {name: getattr(message, name) for name in BODY_FIELDS}
    return Body(_body_encoder.encode(_Body(**fields)).decode(), json=True)


def said_in(body: Body) -> dict[str, Any]:
    """The said fields `body` holds, by name (absent ones UNSET): the inverse of `body_of`."""
    if not body.json:
        return {"content": body.text}
    decoded = _body_decoder.decode(body.text)
    return {name: getattr(decoded, name) for name in BODY_FIELDS}


def text_of(message: Utterance) -> str:
    """The text a message shows: its string content, or its text parts joined by newlines (what
    token counting, titles and search read). Text parts are Chat's `text` and the Responses parts
    stored as given (`input_text`, `output_text` with annotations: items.py)."""
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str)
        )
    return ""


_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def tool_call_ids(message: Utterance) -> list[str]:
    """The ids of the calls an assistant message asks for, in order (none for any other message)."""
    return [] if message.tool_calls is UNSET else [call.id for call in message.tool_calls]


_IMAGE_DETAILS = frozenset({"auto", "low", "high"})


def _check_part(index: int, part: Any) -> None:
    where = f"content[{index}]"
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidMessage(f"{where} must be an object with a string `type`.", field=where)
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise InvalidMessage(f"{where}: a text part needs a string `text`.", field=f"{where}.text")
    elif kind == "refusal":
        if not isinstance(part.get("refusal"), str):
            raise InvalidMessage(f"{where}: a refusal part needs a string `refusal`.", field=f"{where}.refusal")
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
            raise InvalidMessage(
                f"{where}: an image_url part needs `image_url.url`, an http(s) or data: URL.",
                field=f"{where}.image_url.url",
            )
        detail = image.get("detail")  # type: ignore[union-attr]
        if detail is not None and detail not in _IMAGE_DETAILS:
            raise InvalidMessage(
                f"{where}: `image_url.detail` is one of auto, low, high.", field=f"{where}.image_url.detail"
            )
    elif kind == "input_audio":
        audio = part.get("input_audio")
        if not (isinstance(audio, dict) and isinstance(audio.get("data"), str) and isinstance(audio.get("format"), str)):
            raise InvalidMessage(
                f"{where}: an input_audio part needs `input_audio.data` (base64) and `input_audio.format`.",
                field=f"{where}.input_audio",
            )
    elif kind == "file":
        file = part.get("file")
        if not (isinstance(file, dict) and any(isinstance(file.get(k), str) for k in ("file_id", "file_data"))):
            raise InvalidMessage(
                f"{where}: a file part needs `file.file_id` or `file.file_data`.", field=f"{where}.file"
            )
        if "file_data" in file and not isinstance(file["file_data"], str):
            # A string or nothing: where a payload stands, a stored body may hold a reference (stored.py).
            raise InvalidMessage(f"{where}: `file.file_data` is base64 text.", field=f"{where}.file.file_data")
    # any other type is kept as given


def check(message: Utterance) -> None:
    """Refuse a message no model API would accept, naming the field: the rules of one message on its
    own (where it may stand in a tree is tree.py's)."""
    role = message.role
    content = message.content
    calls = message.tool_calls
    if calls is not UNSET and role != "assistant":
        raise InvalidMessage("Only an assistant message has `tool_calls`.", field="tool_calls")
    if message.tool_call_id is not UNSET and role != "tool":
        raise InvalidMessage("Only a tool message has `tool_call_id`.", field="tool_call_id")
    if role == "tool" and message.tool_call_id is UNSET:
        raise InvalidMessage("A tool message needs the `tool_call_id` of the call it answers.", field="tool_call_id")
    if role != "assistant":
        for name in ("refusal", "reasoning_content", "reasoning"):
            if getattr(message, name) is not UNSET:
                raise InvalidMessage(f"Only an assistant message has `{name}`.", field=name)
    if calls is not UNSET:
        if not calls:
            raise InvalidMessage("`tool_calls` is omitted, not empty.", field="tool_calls")
        seen: set[str] = set()
        for index, call in enumerate(calls):
            if not call.id:
                raise InvalidMessage(f"tool_calls[{index}] needs an `id`.", field=f"tool_calls[{index}].id")
            if call.id in seen:
                raise InvalidMessage(f"Tool call id {call.id!r} appears twice.", field=f"tool_calls[{index}].id")
            seen.add(call.id)
    if isinstance(content, list):
        for index, part in enumerate(content):
            _check_part(index, part)
    carried_otherwise = calls is not UNSET or message.refusal not in (UNSET, None)
    if not carried_otherwise and (content is UNSET or content is None or content == "" or content == []):
        raise InvalidMessage(
            "`content` is required, and not empty, unless tool calls (or a refusal) carry the message.",
            field="content",
        )


class ContextItem(Utterance, frozen=True, kw_only=True):
    """A message as a model is shown it: its id (recorded in the reply's generation) and what it says."""

    id: uuid.UUID


def said(message: Utterance) -> dict[str, Any]:
    """What `message` (an Utterance, or any shape extending one) says, as the fields to build another
    shape from: the one copy of a message's fields from shape to shape."""
    return {name: getattr(message, name) for name in Utterance.__struct_fields__}


def context_item(message_id: uuid.UUID, message: Utterance) -> ContextItem:
    """`message`, as a model is shown it."""
    return ContextItem(**said(message), id=message_id)


S = TypeVar("S", bound=msgspec.Struct)


def carried(shape: type[S], source: msgspec.Struct, **given: Any) -> S:
    """A `shape` built from the fields of `source` (any struct: a wire body, a command) that `shape`
    also has, by name, and the `given` ones: an edge's one conversion, so that a field both shapes
    carry crosses it without the edge naming it. A field `source` lacks takes `shape`'s default."""
    fields = {name: getattr(source, name) for name in _shared(shape, type(source)) if name not in given}
    return shape(**fields, **given)


@functools.cache
def _shared(shape: type[msgspec.Struct], source: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields `shape` and `source` both have, in `shape`'s order."""
    return tuple(name for name in shape.__struct_fields__ if name in source.__struct_fields__)
