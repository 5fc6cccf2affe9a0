"""Ollama's form of a message (`/api/chat`'s `message`), and its conversion to and from convtree's one
message shape: one function per direction, `utterances` (a sent history in) and `ollama_message`
(a message out). Both the Ollama door (service/api/ollama.py) and an Ollama provider speak this form.

The conversion in is deterministic, so a history an Ollama client sends again converts to exactly
the messages stored the first time, and `utterances([ollama_message(m) ...])` gives back every
message this door stores. The rules:

- `content` is a string in Ollama, where absent and "" are the same. A message with `images` has
  content parts: a `text` part with the content (only when it is not ""), then one `image_url` part
  per image, in order, each a `data:<media type>;base64,<the image as sent>` URL. The media type is
  read from the image's first bytes (`media_type`: PNG, JPEG, GIF, WebP, BMP, TIFF; anything else
  `application/octet-stream`). Without images the content stays the string, as every stored body is.
- A message with tool calls and no content ("" or absent) has content `null`, as OpenAI writes it.
- `thinking` is `reasoning_content`.
- A tool call is `{"id", "type": "function", "function": {"name", "arguments"}}`, its `arguments`
  the compact JSON text of Ollama's object, keys in the order sent (`arguments_text`). Ollama's
  calls have no id (some clients send one, which is kept): the id is derived from what the call
  says, `call_` and 24 hex digits of SHA-256 over its index in the message, name and arguments
  (`call_id`), so the same call sent again has the same id.
- A tool message's `tool_name` is its `name`. Ollama names the tool, not the call, so its
  `tool_call_id` (unless sent) is that of the first call of the assistant message before it (with
  only tool messages between) not yet answered, the first with that name when `tool_name` is given.

Out, a message's parts that Ollama cannot carry (an http(s) image, audio, a file) are left out, and
arguments that are not a JSON object are sent as the text they are (blank arguments as `{}`).

The replies this door answers with are stored in the form the conversion in gives them back
(`as_resent`): each function call's arguments the compact JSON of the object they parse to, its id
derived from them as above (`call_<digest>`, replacing the provider's). Why: auto-threading finds
the conversation a resent history continues by the exact bytes of each message (the path digest of
service/domain/threads.py, an index probe, never a scan), and an Ollama client cannot send the
provider's form back: Ollama's own client keeps neither a call's id nor the arguments' text (only
the object it parsed), so the assistant message it resends would never match a reply stored as the
provider wrote it, and each tool-result follow-up would branch a copy of it. Stored this way, a
reply sent out and back (`utterances([ollama_message(reply)])`) says what the stored one says, as
threads.said_key compares them (a refusal, which Ollama has no field for, aside): the resent reply
matches, and only the tool results after it are appended. The
provider's model sees the derived ids (a call's id and its result's `tool_call_id` agree, which is
all a model API asks of them); the provider's own id is not kept. A reply stored by another door
keeps the provider's form, so an Ollama client resending a history made through the OpenAI door
(with calls) continues it as a branch at that reply.
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Any

import msgspec

from service.domain.errors import InvalidRequest
from service.domain.message import (
    UNSET,
    Content,
    FunctionCall,
    FunctionToolCall,
    Part,
    ToolCall,
    UnsetType,
    Utterance,
)

ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})  # Ollama's: no "developer"


class OllamaFunction(msgspec.Struct, omit_defaults=True):
    name: str
    arguments: dict[str, Any] | str = {}
    index: int | UnsetType = UNSET


class OllamaToolCall(msgspec.Struct, omit_defaults=True):
    function: OllamaFunction
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET


class OllamaMessage(msgspec.Struct, omit_defaults=True):
    """A message as Ollama's `/api/chat` sends and answers it; `images` are base64 strings."""

    role: str
    content: str | UnsetType = UNSET  # absent is "" (Ollama's own answers always say it)
    thinking: str | UnsetType = UNSET
    images: list[str] | UnsetType = UNSET
    tool_calls: list[OllamaToolCall] | UnsetType = UNSET
    tool_name: str | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


# --- In: an Ollama history as convtree's messages ---------------------------------------------


def utterances(messages: list[OllamaMessage]) -> list[Utterance]:
    """The history `messages` as convtree's messages, in order (see the module's rules)."""
    out: list[Utterance] = []
    unanswered: list[ToolCall] = []  # the calls of the last assistant message, not yet answered
    for index, message in enumerate(messages):
        said = _utterance(index, message, unanswered)
        if said.role == "assistant":
            unanswered = [] if said.tool_calls is UNSET else list(said.tool_calls)
        elif said.role != "tool":
            unanswered = []
        out.append(said)
    return out


def _utterance(index: int, message: OllamaMessage, unanswered: list[ToolCall]) -> Utterance:
    where = f"messages[{index}]"
    if message.role not in ROLES:
        raise InvalidRequest(
            f"{where}: role {message.role!r} is not one of {', '.join(sorted(ROLES))}.", parameter=f"{where}.role"
        )
    calls: list[ToolCall] | UnsetType = UNSET
    if message.tool_calls is not UNSET and message.tool_calls:
        calls = [_tool_call(i, call) for i, call in enumerate(message.tool_calls)]
    text = message.content or ""
    content: Content = text
    if message.images is not UNSET and message.images:
        content = _parts(where, text, message.images)
    elif calls is not UNSET and not text:
        content = None
    fields: dict[str, Any] = {"role": message.role, "content": content, "tool_calls": calls}
    if message.thinking is not UNSET and message.thinking:
        fields["reasoning_content"] = message.thinking
    if message.tool_name is not UNSET:
        fields["name"] = message.tool_name
    if message.tool_call_id is not UNSET:
        fields["tool_call_id"] = message.tool_call_id
    elif message.role == "tool":
        fields["tool_call_id"] = _answered(where, message.tool_name, unanswered)
    return Utterance(**fields)


def _tool_call(index: int, call: OllamaToolCall) -> FunctionToolCall:
    name = call.function.name
    arguments = arguments_text(call.function.arguments)
    given = call.id if call.id is not UNSET and call.id else None
    return FunctionToolCall(id=given or call_id(index, name, arguments), function=FunctionCall(name, arguments))


def arguments_text(arguments: dict[str, Any] | str) -> str:
    """A call's arguments as convtree stores them: the compact JSON of Ollama's object, keys in the
    order sent (a client that sends a string keeps it as it is)."""
    return arguments if isinstance(arguments, str) else msgspec.json.encode(arguments).decode()


def call_id(index: int, name: str, arguments: str) -> str:
    """The id of a call that came without one: a digest of its place in its message and what it
    says, so that the same call sent again has the same id."""
    said = msgspec.json.encode([index, name, arguments])
    return "call_" + hashlib.sha256(said).hexdigest()[:24]


def _answered(where: str, tool_name: str | UnsetType, unanswered: list[ToolCall]) -> str:
    for position, call in enumerate(unanswered):
        if tool_name is UNSET or (isinstance(call, FunctionToolCall) and call.function.name == tool_name):
            del unanswered[position]
            return call.id
    named = "" if tool_name is UNSET else f" named {tool_name!r}"
    raise InvalidRequest(
        f"{where}: a tool message answers a tool call{named} of the assistant message before it, "
        "and there is none left to answer.",
        parameter=f"{where}.tool_name",
    )


# The first bytes of each image format the door names; anything else is application/octet-stream.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (  # (bytes, at offset, media type)
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),  # after "RIFF" and the length
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)


def media_type(image: bytes) -> str:
    """The media type an image's first bytes name."""
    for signature, offset, kind in _SIGNATURES:
        if image[offset : offset + len(signature)] == signature and (offset == 0 or image[:4] == b"RIFF"):
            return kind
    return "application/octet-stream"


def _parts(where: str, text: str, images: list[str]) -> list[Part]:
    parts: list[Part] = [{"type": "text", "text": text}] if text else []
    for i, image in enumerate(images):
        try:
            if not image:
                raise binascii.Error("empty")
            head = binascii.a2b_base64(image[:16].encode(), strict_mode=True)
            binascii.a2b_base64(image.encode(), strict_mode=True)  # the whole of it is base64
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidRequest(
                f"{where}.images[{i}] is not a base64-encoded image.", parameter=f"{where}.images[{i}]"
            ) from None
        url = f"data:{media_type(head)};base64,{image}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


# --- Out: a convtree message as Ollama's ----------------------------------------------------------


def ollama_message(message: Utterance) -> OllamaMessage:
    """`message` in Ollama's form (see the module's rules)."""
    out = OllamaMessage(role=message.role, content="")
    content = message.content
    if isinstance(content, str):
        out.content = content
    elif isinstance(content, list):
        out.content = "".join(p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str))
        images = [image for image in map(_image_of, content) if image is not None]
        if images:
            out.images = images
    if isinstance(message.reasoning_content, str) and message.reasoning_content:
        out.thinking = message.reasoning_content
    if message.tool_calls is not UNSET:
        out.tool_calls = [
            OllamaToolCall(
                id=call.id,
                type="function",
                function=OllamaFunction(name=call.function.name, arguments=_object(call.function.arguments), index=i),
            )
            for i, call in enumerate(message.tool_calls)
            if isinstance(call, FunctionToolCall)
        ]
    if message.role == "tool":
        if message.name is not UNSET:
            out.tool_name = message.name
        if message.tool_call_id is not UNSET:
            out.tool_call_id = message.tool_call_id
    return out


def as_resent(reply: Utterance) -> Utterance:
    """`reply` as this door stores it: its function calls in the form `utterances` gives a call an
    Ollama client sends back (see the module's rules), every other field as given."""
    if reply.tool_calls is UNSET:
        return reply
    calls: list[ToolCall] = []
    for call in reply.tool_calls:
        if isinstance(call, FunctionToolCall):
            name = call.function.name
            arguments = canonical_arguments(call.function.arguments)
            call = FunctionToolCall(id=call_id(len(calls), name, arguments), function=FunctionCall(name, arguments))
        calls.append(call)
    return msgspec.structs.replace(reply, tool_calls=calls)


def canonical_arguments(arguments: str) -> str:
    """Arguments text as it comes back from an Ollama client: the compact JSON of the object it
    parses to (blank: `{}`); anything else, which Ollama cannot carry as an object, as it is."""
    value = _object(arguments)
    return arguments_text(value) if isinstance(value, dict) else arguments


def response_format(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Ollama's `format` as OpenAI's `response_format`: "json" is `json_object`, a JSON schema is
    `json_schema` (named "format"), absent or "" is none."""
    if format is None or format == "":
        return None
    if format == "json":
        return {"type": "json_object"}
    if isinstance(format, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": format}}
    raise InvalidRequest(f'format is "json" or a JSON schema, not {format!r}.', parameter="format")


def done_reason(finish_reason: str | None) -> str:
    """A reply's finish reason as Ollama's `done_reason`: Ollama ends a reply that asks for tools
    with "stop" (it has no "tool_calls"); "length" and any other reason as they are."""
    if finish_reason is None or finish_reason in ("tool_calls", "function_call"):
        return "stop"
    return finish_reason


def _image_of(part: Part) -> str | None:
    """The base64 image of a data: URL image part (None for any other part)."""
    if part.get("type") != "image_url" or not isinstance(part.get("image_url"), dict):
        return None
    url = part["image_url"].get("url")
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    meta, comma, data = url.partition(",")
    return data if comma and meta.endswith(";base64") else None


def _object(arguments: str) -> dict[str, Any] | str:
    if not arguments.strip():  # a call without arguments, as OpenAI streams one
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    return value if isinstance(value, dict) else arguments
