"""OpenAI Responses items and convtree's messages, both ways, on the client's side of the wire.

The server maps items onto messages for its Conversations API (README, *OpenAI Conversations*);
this module applies the same rules to the native API's messages, so that a session built on the
native API stores and reads back exactly what the Conversations API would:

- A user, system or developer `message` item is one message; a `function_call_output` (or
  `custom_tool_call_output`) is a `tool` message with `tool_call_id` = `call_id`.
- One model step is **one** assistant message: a `reasoning` item, an assistant `message` item
  and its `function_call`s, in that order, become its `reasoning` (or `reasoning_content`, when
  the item is only a reasoning text), `content` (and `refusal`, from a last `refusal` part) and
  `tool_calls`. A second reasoning item, a second assistant message item, or an assistant message
  item after calls starts the next step.
- Content parts are stored as Chat Completions parts where they say the same (`input_text` and
  `output_text` as `text`, `input_image` by URL as `image_url`, `input_file` without a URL as
  `file`); a lone text part is stored as a plain string. Other parts are kept as given.
- Item ids come from the message's id: `msg_<hex>`, `rs_<hex>`, `fc_<hex>_<i>` (its i-th call),
  `fco_<hex>` (a tool output); every item read back is `status: "completed"`.

Self-contained: the client ships without the server, and imports nothing of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from convtree.client.errors import ConvtreeError

Item = dict[str, Any]
Said = dict[str, Any]  # a message as the native API takes it: role, content, tool_calls, …

COMPLETED = "completed"
_PREFIXES = {"message": "msg_", "reasoning": "rs_", "call": "fc_", "output": "fco_"}
_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})


class UnstorableItem(ConvtreeError, ValueError):
    """An item no convtree message can hold (its type, or a field it lacks), named by its index."""


# --- ids ------------------------------------------------------------------------------------------


def item_id(message_id: uuid.UUID, kind: str, index: int = 0) -> str:
    """The id of an item of `message_id`: kind is message, reasoning, call (with its index) or output."""
    base = _PREFIXES[kind] + message_id.hex
    return f"{base}_{index}" if kind == "call" else base


def message_of_item(value: str) -> uuid.UUID | None:
    """The id of the message the item id `value` is read from, or None if it is no item id."""
    prefix, _, rest = value.partition("_")
    if prefix + "_" not in _PREFIXES.values():
        return None
    if prefix == "fc":
        rest, _, number = rest.partition("_")
        if not number.isdigit():
            return None
    try:
        return uuid.UUID(hex=rest) if len(rest) == 32 else None
    except ValueError:
        return None


# --- parts ----------------------------------------------------------------------------------------


def _only(part: dict[str, Any], *keys: str) -> bool:
    return set(part) <= {"type", *keys}


def _stored_part(part: Any, role: str) -> Any:
    if not isinstance(part, dict):
        return part
    kind, text = part.get("type"), part.get("text")
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


def _stored_content(content: Any, role: str, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnstorableItem(f"{where}: content is a string or a list of content parts.")
    return _collapsed([_stored_part(part, role) for part in content])


def _collapsed(parts: list[Any]) -> Any:
    """One text part alone is that text."""
    if len(parts) == 1 and isinstance(parts[0], dict) and set(parts[0]) == {"type", "text"}:
        if parts[0]["type"] == "text" and isinstance(parts[0]["text"], str):
            return parts[0]["text"]
    return parts


def _item_content(content: Any, role: str) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_item_part({"type": "text", "text": content}, role)]
    return [_item_part(part, role) for part in content]


# --- messages to items ----------------------------------------------------------------------------


def messages_to_items(messages: Iterable[Any]) -> list[Item]:
    """The items stored messages (`convtree.client.Message`, in order, e.g. a context root first) read as."""
    items: list[Item] = []
    custom: set[str] = set()
    for message in messages:
        for call in message.tool_calls or ():
            if call.get("type") == "custom":
                custom.add(call["id"])
        items.extend(message_items(message, custom))
    return items


def message_items(message: Any, custom_calls: Iterable[str] = ()) -> list[Item]:
    """The items one stored message reads as (`custom_calls`: ids a tool message may answer as custom)."""
    mid: uuid.UUID = message.id
    role = message.role
    if role == "tool":
        content = message.content
        custom = message.tool_call_id in set(custom_calls)
        return [
            {
                "id": item_id(mid, "output"),
                "type": "custom_tool_call_output" if custom else "function_call_output",
                "call_id": message.tool_call_id,
                "output": content if isinstance(content, str) else _item_content(content, "tool"),
                "status": COMPLETED,
            }
        ]
    if role != "assistant":
        return [_message_item(mid, role, _item_content(message.content, role))]
    items: list[Item] = []
    reasoning = _reasoning_item(message)
    if reasoning is not None:
        items.append(reasoning)
    content = _item_content(message.content, role)
    if isinstance(message.refusal, str):
        content.append({"type": "refusal", "refusal": message.refusal})
    if content or (message.tool_calls is None and reasoning is None):
        items.append(_message_item(mid, role, content))
    for index, call in enumerate(message.tool_calls or ()):
        items.append(_call_item(mid, index, call))
    return items


def _message_item(message_id: uuid.UUID, role: str, content: list[Any]) -> Item:
    return {"id": item_id(message_id, "message"), "type": "message", "role": role, "status": COMPLETED, "content": content}


def _reasoning_item(message: Any) -> Item | None:
    head = {"id": item_id(message.id, "reasoning"), "type": "reasoning"}
    if message.reasoning is not None:
        kept = {k: v for k, v in message.reasoning.items() if k not in ("id", "type", "status")}
        return {**head, "summary": [], **kept, "status": COMPLETED}
    if isinstance(message.reasoning_content, str):
        text = [{"type": "reasoning_text", "text": message.reasoning_content}]
        return {**head, "summary": [], "content": text, "status": COMPLETED}
    return None


def _call_item(message_id: uuid.UUID, index: int, call: dict[str, Any]) -> Item:
    head = {"id": item_id(message_id, "call", index)}
    if call.get("type") == "custom":
        said = call["custom"]
        return {**head, "type": "custom_tool_call", "call_id": call["id"], "name": said["name"],
                "input": said["input"], "status": COMPLETED}  # fmt: skip
    said = call["function"]
    return {**head, "type": "function_call", "call_id": call["id"], "name": said["name"],
            "arguments": said["arguments"], "status": COMPLETED}  # fmt: skip


# --- items to messages ----------------------------------------------------------------------------


class _Step:
    """An assistant message being put together from the items of one model step."""

    def __init__(self) -> None:
        self.reasoning: Said | None = None
        self.said: Said | None = None
        self.calls: list[dict[str, Any]] = []

    def message(self) -> Said:
        out: Said = {"role": "assistant"}
        if self.reasoning is not None:
            out.update(self.reasoning)
        if self.said is not None:
            out.update(self.said)
        elif self.calls:
            out["content"] = None  # as a model's reply with calls has it
        if self.calls:
            out["tool_calls"] = self.calls
        return out


def items_to_messages(items: Sequence[Any]) -> list[Said]:
    """The messages `items` (Responses input items, in order) are, each as the native API's append
    takes it. Raises UnstorableItem naming the item at fault; what the server refuses of the rest
    (an empty message, a malformed part) it answers with 422."""
    messages: list[Said] = []
    step: _Step | None = None

    def close() -> None:
        nonlocal step
        if step is not None:
            messages.append(step.message())
            step = None

    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise UnstorableItem(f"{where} must be an object.")
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "assistant":
            if step is not None and (step.said is not None or step.calls):
                close()
            step = step or _Step()
            step.said = _assistant_said(item, where)
        elif kind == "reasoning":
            close()
            step = _Step()
            step.reasoning = _reasoning(item)
        elif kind in ("function_call", "custom_tool_call"):
            step = step or _Step()
            step.calls.append(_call(item, where))
        else:
            close()
            messages.append(_other(item, kind, where))
    close()
    return messages


def _string(item: Item, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise UnstorableItem(f"{where}: `{key}` is a string.")
    return value


def _assistant_said(item: Item, where: str) -> Said:
    content = _stored_content(item.get("content"), "assistant", f"{where}.content")
    if isinstance(content, list) and content:
        refusals = [p for p in content if isinstance(p, dict) and p.get("type") == "refusal"]
        last = content[-1]
        if len(refusals) == 1 and last is refusals[0] and _only(last, "refusal") and isinstance(last["refusal"], str):
            rest = _collapsed(content[:-1])
            return {"content": None if rest == [] else rest, "refusal": last["refusal"]}
    return {"content": content}


def _reasoning(item: Item) -> Said:
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
        return {"reasoning_content": text[0]["text"]}
    return {"reasoning": kept}


def _call(item: Item, where: str) -> dict[str, Any]:
    call_id, name = _string(item, "call_id", where), _string(item, "name", where)
    if item["type"] == "function_call":
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": _string(item, "arguments", where)}}
    return {"id": call_id, "type": "custom", "custom": {"name": name, "input": _string(item, "input", where)}}


def _other(item: Item, kind: Any, where: str) -> Said:
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise UnstorableItem(f"{where}: `role` is one of user, system, developer, assistant.")
        return {"role": role, "content": _stored_content(item.get("content"), role, f"{where}.content")}
    if kind in ("function_call_output", "custom_tool_call_output"):
        call_id = _string(item, "call_id", where)
        output = item.get("output")
        if isinstance(output, list):
            return {"role": "tool", "tool_call_id": call_id, "content": [_stored_part(p, "tool") for p in output]}
        return {"role": "tool", "tool_call_id": call_id, "content": _string(item, "output", where)}
    raise UnstorableItem(f"{where}: an item of type {kind!r} cannot be stored.")
