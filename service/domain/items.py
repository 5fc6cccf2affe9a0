"""OpenAI Responses and Conversations items, as convtree's messages: the one mapping between the two,
both ways, and the items' ids (pure: no I/O).

A message is stored in one form whichever door it came through, so that a message created through
Chat Completions lists as items and an item created through Conversations or Responses reads back
through Chat Completions (and as the same item):

- **Content parts** are stored as Chat Completions parts wherever that form says the same:
  `input_text` (user, system, developer, tool output) and `output_text` without annotations
  (assistant) are `{"type": "text", "text"}`; `input_image` with an `image_url` is
  `{"type": "image_url", "image_url": {"url", "detail"?}}`; `input_file` without a `file_url` is
  `{"type": "file", "file": {"file_id"?, "file_data"?, "filename"?}}`; `refusal` is the same part
  in both. Every other part (an `input_image` by `file_id`, an `input_file` by `file_url`, an
  `output_text` with annotations or logprobs, any unknown type) is stored as given, and reads back
  as given. Chat parts are what upstream chat providers take, what `stored.py` moves large
  payloads (base64 images, files) out of line from, and what `text_of` reads.
- A message's content that is one text part alone is stored as that text (a string body, as every
  plain message is: the same bytes, search and auto-threading as the Chat door's "hi"); a string
  content reads back as one text part, since items always list their content.
- An **assistant message** is one model step: its reasoning (`reasoning` item), what it says
  (`message` item: its content, then its `refusal` as a last `refusal` part) and its calls
  (`function_call` / `custom_tool_call` items, in order), listed in that order. Reading items,
  consecutive reasoning, assistant message and call items form one assistant message again, so a
  step with parallel calls stays one message whose tool results follow it (calls.py's group rule,
  and Chat Completions contexts, stay valid). A second reasoning item, a second assistant message
  item, or an assistant message item after calls starts the next message.
- A **reasoning item** whose only content is its reasoning text (`summary` empty, `content` one
  `reasoning_text` part) is the message's `reasoning_content` (as vLLM-style chat servers give
  it); any other (a summary, `encrypted_content`) is kept as given in `reasoning`.
- A **tool message** is a `function_call_output` item (`custom_tool_call_output` when it answers a
  custom call of the messages read with it), its `output` the content: a string, or parts.

What an item says beyond this is not kept: the ids it was sent with (convtree gives its own,
below), its `status` (read back `"completed"`), an assistant item's `phase`; a message's `name` and
`metadata` are not shown as items. Forms that read back otherwise than sent: an `image_url` without
`detail` reads as `input_image` with `detail: "auto"`; an `output_text` without `annotations` reads
back with `annotations: []`; a Chat content of one text part in a list reads back as a string; a
Responses `text` part reads back as `input_text`/`output_text`; an assistant's lone `refusal` part
in content reads back as its `refusal` field.

Ids, derived from the message's (a UUID, as 32 hex digits), so an item has the same id through
every door and at every read: `msg_<hex>` a message item, `rs_<hex>` an assistant message's
reasoning, `fc_<hex>_<i>` its i-th call (whatever the call's type), `fco_<hex>` a tool message's
output; `conv_<hex>` a conversation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from service.domain.errors import InvalidMessage
from service.domain.message import (
    UNSET,
    ContextItem,
    CustomCall,
    CustomToolCall,
    FunctionCall,
    FunctionToolCall,
    Part,
    Role,
    ToolCall,
    Utterance,
    check,
)
from service.domain.views import Message

Item = dict[str, Any]
ItemKind = Literal["message", "reasoning", "call", "output"]
# A message with its id: what messages_to_items reads (a context's item, a stored message).
Identified = ContextItem | Message

_PREFIXES: dict[ItemKind, str] = {"message": "msg_", "reasoning": "rs_", "call": "fc_", "output": "fco_"}
_KINDS = {prefix: kind for kind, prefix in _PREFIXES.items()}
CONVERSATION_PREFIX = "conv_"
COMPLETED = "completed"
_MESSAGE_ROLES: frozenset[str] = frozenset({"user", "system", "developer", "assistant"})


# --- ids ------------------------------------------------------------------------------------------


class ItemRef(msgspec.Struct, frozen=True):
    """What an item id names: the message it is read from, which of its items, and (a call) which
    of its calls."""

    message_id: uuid.UUID
    kind: ItemKind
    index: int = 0


def item_id(message_id: uuid.UUID, kind: ItemKind, index: int = 0) -> str:
    """The id of an item of `message_id` (`index`: the call's, for a call)."""
    base = _PREFIXES[kind] + message_id.hex
    return f"{base}_{index}" if kind == "call" else base


def parse_item_id(value: str) -> ItemRef | None:
    """The item `value` names, or None if it is no item id convtree gives."""
    prefix, _, rest = value.partition("_")
    kind = _KINDS.get(prefix + "_")
    if kind is None:
        return None
    index = 0
    if kind == "call":
        rest, _, number = rest.partition("_")
        if not (number.isascii() and number.isdigit()) or (len(number) > 1 and number[0] == "0"):
            return None
        index = int(number)
    message_id = _hex_uuid(rest)
    return None if message_id is None else ItemRef(message_id, kind, index)


def conversation_id(value: uuid.UUID) -> str:
    """A conversation's id as the Conversations API gives it."""
    return CONVERSATION_PREFIX + value.hex


def parse_conversation_id(value: str) -> uuid.UUID | None:
    """The conversation `value` names (`conv_<hex>`), or None if it names none."""
    if not value.startswith(CONVERSATION_PREFIX):
        return None
    return _hex_uuid(value[len(CONVERSATION_PREFIX) :])


def _hex_uuid(value: str) -> uuid.UUID | None:
    if len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
        return None
    return uuid.UUID(hex=value)


# --- parts ----------------------------------------------------------------------------------------


def _only(part: Part, *keys: str) -> bool:
    return set(part) <= {"type", *keys}


def _stored_part(part: Any, role: str) -> Any:
    """An item's content part as stored (see the module's docstring); anything unknown as given."""
    if not isinstance(part, dict):
        return part  # message.check names it
    kind = part.get("type")
    text = part.get("text")
    if kind == "input_text" and role != "assistant" and _only(part, "text") and isinstance(text, str):
        return {"type": "text", "text": text}
    if (
        kind == "output_text"
        and role == "assistant"
        and _only(part, "text", "annotations", "logprobs")
        and isinstance(text, str)
        and part.get("annotations", []) == []
        and part.get("logprobs", []) == []
    ):
        return {"type": "text", "text": text}
    if kind == "input_image" and _only(part, "image_url", "detail") and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if (
        kind == "input_file"
        and _only(part, "file_id", "file_data", "filename")
        and any(isinstance(part.get(k), str) for k in ("file_id", "file_data"))
    ):
        return {"type": "file", "file": {k: v for k, v in part.items() if k != "type"}}
    return dict(part)


def _item_part(part: Any, role: str) -> Any:
    """A stored content part as an item's: the inverse of `_stored_part`."""
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "text" and _only(part, "text") and isinstance(part.get("text"), str):
        if role == "assistant":
            return {"type": "output_text", "text": part["text"], "annotations": []}
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url" and _only(part, "image_url"):
        image = part["image_url"]
        if isinstance(image, dict) and set(image) <= {"url", "detail"} and isinstance(image.get("url"), str):
            return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail") or "auto"}
    if kind == "file" and _only(part, "file"):
        file = part["file"]
        if isinstance(file, dict) and set(file) <= {"file_id", "file_data", "filename"}:
            return {"type": "input_file", **file}
    return dict(part)


def _stored_content(content: Any, role: str, field: str) -> str | list[Part]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidMessage(f"{field} is a string or a list of content parts.", field=field)
    parts = [_stored_part(part, role) for part in content]
    return _collapsed(parts)


def _collapsed(parts: list[Part]) -> str | list[Part]:
    """One text part alone is that text (see the module's docstring)."""
    if len(parts) == 1 and isinstance(parts[0], dict) and parts[0].get("type") == "text" and set(parts[0]) == {"type", "text"}:
        text = parts[0]["text"]
        if isinstance(text, str):
            return text
    return parts


def _item_content(content: Any, role: str) -> list[Any]:
    if content is UNSET or content is None:
        return []
    if isinstance(content, str):
        return [_item_part({"type": "text", "text": content}, role)]
    return [_item_part(part, role) for part in content]


# --- messages to items ----------------------------------------------------------------------------


def messages_to_items(messages: Iterable[Identified]) -> list[Item]:
    """The items `messages` (in order, e.g. a path root first) read as, in order (see the module's
    docstring): one message item for a user, system or developer message; the reasoning, message and
    call items of an assistant message; one output item for a tool message."""
    items: list[Item] = []
    custom: set[str] = set()
    for message in messages:
        if message.tool_calls is not UNSET:
            custom.update(c.id for c in message.tool_calls if isinstance(c, CustomToolCall))
        items.extend(message_items(message.id, message, custom_calls=custom))
    return items


def message_items(message_id: uuid.UUID, message: Utterance, custom_calls: Iterable[str] = ()) -> list[Item]:
    """The items one message reads as. `custom_calls`: the ids of custom calls a tool message may
    answer (its output is then a `custom_tool_call_output`)."""
    role = message.role
    if role == "tool":
        return [_output_item(message_id, message, message.tool_call_id in set(custom_calls))]
    if role != "assistant":
        return [_message_item(message_id, role, _item_content(message.content, role))]
    items: list[Item] = []
    reasoning = _reasoning_item(message_id, message)
    if reasoning is not None:
        items.append(reasoning)
    content = _item_content(message.content, role)
    if isinstance(message.refusal, str):
        content.append({"type": "refusal", "refusal": message.refusal})
    if content or (message.tool_calls is UNSET and reasoning is None):
        items.append(_message_item(message_id, role, content))
    if message.tool_calls is not UNSET:
        items.extend(_call_item(message_id, i, call) for i, call in enumerate(message.tool_calls))
    return items


def _message_item(message_id: uuid.UUID, role: str, content: list[Any]) -> Item:
    return {"id": item_id(message_id, "message"), "type": "message", "role": role, "status": COMPLETED, "content": content}


def _reasoning_item(message_id: uuid.UUID, message: Utterance) -> Item | None:
    head = {"id": item_id(message_id, "reasoning"), "type": "reasoning"}
    if message.reasoning is not UNSET:
        kept = {k: v for k, v in message.reasoning.items() if k not in ("id", "type", "status")}
        return {**head, "summary": [], **kept, "status": COMPLETED}
    if isinstance(message.reasoning_content, str):
        text = [{"type": "reasoning_text", "text": message.reasoning_content}]
        return {**head, "summary": [], "content": text, "status": COMPLETED}
    return None


def _call_item(message_id: uuid.UUID, index: int, call: ToolCall) -> Item:
    head = {"id": item_id(message_id, "call", index)}
    if isinstance(call, FunctionToolCall):
        return {
            **head,
            "type": "function_call",
            "call_id": call.id,
            "name": call.function.name,
            "arguments": call.function.arguments,
            "status": COMPLETED,
        }
    return {
        **head,
        "type": "custom_tool_call",
        "call_id": call.id,
        "name": call.custom.name,
        "input": call.custom.input,
        "status": COMPLETED,
    }


def _output_item(message_id: uuid.UUID, message: Utterance, custom: bool) -> Item:
    content = message.content
    output: Any = content if isinstance(content, str) else _item_content(content, "tool")
    return {
        "id": item_id(message_id, "output"),
        "type": "custom_tool_call_output" if custom else "function_call_output",
        "call_id": message.tool_call_id,
        "output": output,
        "status": COMPLETED,
    }


# --- items to messages ----------------------------------------------------------------------------


class _Step:
    """An assistant message being put together from the items of one model step."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.reasoning: Utterance | None = None
        self.said: Utterance | None = None
        self.calls: list[ToolCall] = []

    def message(self) -> Utterance:
        fields: dict[str, Any] = {}
        if self.reasoning is not None:
            fields["reasoning"] = self.reasoning.reasoning
            fields["reasoning_content"] = self.reasoning.reasoning_content
        if self.said is not None:
            fields["content"] = self.said.content
            fields["refusal"] = self.said.refusal
        elif self.calls:
            fields["content"] = None  # as a model's reply with calls has it
        if self.calls:
            fields["tool_calls"] = self.calls
        return Utterance(role="assistant", **fields)


def items_to_messages(items: Sequence[Any]) -> list[Utterance]:
    """The messages `items` (Responses input items, or Conversations items: messages with a `type`
    or without, reasoning, function and custom calls and their outputs) are, in order, each checked
    (message.check). Raises InvalidMessage naming the item (`items[i]…`) at fault."""
    messages: list[Utterance] = []
    starts: list[int] = []
    step: _Step | None = None

    def close() -> None:
        nonlocal step
        if step is not None:
            messages.append(step.message())
            starts.append(step.start)
            step = None

    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise InvalidMessage(f"{where} must be an object.", field=where)
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "assistant":
            if step is not None and (step.said is not None or step.calls):
                close()
            if step is None:
                step = _Step(index)
            step.said = _assistant_said(item, where)
        elif kind == "reasoning":
            close()
            step = _Step(index)
            step.reasoning = _reasoning(item)
        elif kind in ("function_call", "custom_tool_call"):
            if step is None:
                step = _Step(index)
            step.calls.append(_call(item, where))
        else:
            close()
            messages.append(_other(item, kind, where))
            starts.append(index)
    close()
    for message, start in zip(messages, starts, strict=True):
        try:
            check(message)
        except InvalidMessage as exc:
            field = exc.context.get("field")
            raise InvalidMessage(
                f"items[{start}]: {exc.detail}", field=f"items[{start}]" + ("" if field is None else f".{field}")
            ) from exc
    return messages


def _string(item: Item, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidMessage(f"{where}: `{key}` is a string.", field=f"{where}.{key}")
    return value


def _assistant_said(item: Item, where: str) -> Utterance:
    content = _stored_content(item.get("content"), "assistant", f"{where}.content")
    refusal: str | Any = UNSET
    if isinstance(content, list):
        refusals = [p for p in content if isinstance(p, dict) and p.get("type") == "refusal"]
        last = content[-1] if content else None
        if len(refusals) == 1 and last is refusals[0] and _only(last, "refusal") and isinstance(last["refusal"], str):
            refusal = last["refusal"]
            content = _collapsed(content[:-1])
    kept: str | list[Part] | None = None if content == [] and refusal is not UNSET else content
    return Utterance(role="assistant", content=kept, refusal=refusal)


def _reasoning(item: Item) -> Utterance:
    kept = {k: v for k, v in item.items() if k not in ("id", "type", "status")}
    text = kept.get("content")
    if (
        set(kept) == {"summary", "content"}
        and kept["summary"] == []
        and isinstance(text, list)
        and len(text) == 1
        and isinstance(text[0], dict)
        and set(text[0]) == {"type", "text"}
        and text[0]["type"] == "reasoning_text"
        and isinstance(text[0]["text"], str)
    ):
        return Utterance(role="assistant", reasoning_content=text[0]["text"])
    return Utterance(role="assistant", reasoning=kept)


def _call(item: Item, where: str) -> ToolCall:
    call_id = _string(item, "call_id", where)
    name = _string(item, "name", where)
    if item["type"] == "function_call":
        return FunctionToolCall(id=call_id, function=FunctionCall(name=name, arguments=_string(item, "arguments", where)))
    return CustomToolCall(id=call_id, custom=CustomCall(name=name, input=_string(item, "input", where)))


def _other(item: Item, kind: Any, where: str) -> Utterance:
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise InvalidMessage(
                f"{where}: `role` is one of user, system, developer, assistant.", field=f"{where}.role"
            )
        message_role: Role = role
        return Utterance(role=message_role, content=_stored_content(item.get("content"), role, f"{where}.content"))
    if kind in ("function_call_output", "custom_tool_call_output"):
        call_id = _string(item, "call_id", where)
        output = item.get("output")
        if isinstance(output, list):  # a tool's parts stay a list: its output reads back as sent
            return Utterance(role="tool", content=[_stored_part(p, "tool") for p in output], tool_call_id=call_id)
        return Utterance(role="tool", content=_string(item, "output", where), tool_call_id=call_id)
    raise InvalidMessage(f"{where}: an item of type {kind!r} cannot be stored.", field=f"{where}.type")
