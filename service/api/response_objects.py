"""The Responses API's wire shapes: the Response object (every key the Open Responses schema
requires, null where unset), what a response echoes of its request, and the events of a streamed
response, built from the pieces a reply arrives in."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from service.api import sse
from service.app import responses as responses_app
from service.domain import items, views
from service.upstream import ReasoningDelta, RefusalDelta, Said, TextDelta


class Echo(msgspec.Struct, kw_only=True):
    """What a Response says of the request that made it, as given (defaults: OpenAI's). Stored
    with the response (its `request`), so a later read answers the same."""

    instructions: str | None = None
    tools: list[dict[str, Any]] = []
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    truncation: str = "disabled"
    text: dict[str, Any] = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = {}
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str = "default"
    top_logprobs: int = 0
    background: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


_echo_decoder = msgspec.json.Decoder(Echo)


class ResponseError(msgspec.Struct):
    code: str
    message: str


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)
    total_tokens: int


class ConversationRef(msgspec.Struct):
    id: str


class ResponseObject(msgspec.Struct, kw_only=True):
    """OpenAI's Response, every key present (null where unset), plus `next_response_ids`: the
    responses that continue this one (its children in the tree: each a branch of its own)."""

    id: str
    object: str = "response"
    created_at: int
    completed_at: int | None
    status: str  # in_progress, completed, failed, incomplete, cancelled
    error: ResponseError | None
    incomplete_details: dict[str, str] | None
    instructions: str | None
    model: str
    output: list[dict[str, Any]]
    parallel_tool_calls: bool
    previous_response_id: str | None
    conversation: ConversationRef | None
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    temperature: float
    top_p: float
    truncation: str
    text: dict[str, Any]
    reasoning: dict[str, Any] | None
    user: str | None
    usage: ResponseUsage | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    store: bool
    background: bool
    service_tier: str
    metadata: dict[str, str]
    safety_identifier: str | None
    prompt_cache_key: str | None
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int
    next_response_ids: list[str]


class DeletedResponse(msgspec.Struct):
    id: str
    object: str = "response.deleted"
    deleted: bool = True


class ItemList(msgspec.Struct):
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


def response_id(value: uuid.UUID) -> str:
    return "resp_" + value.hex


def parse_response_id(value: str) -> uuid.UUID | None:
    """The response `value` names (`resp_<32 hex>`), or None."""
    if not value.startswith("resp_") or len(value) != 37:
        return None
    rest = value[5:]
    if not all(c in "0123456789abcdef" for c in rest):
        return None
    return uuid.UUID(hex=rest)


def echo_of(record_request: bytes) -> Echo:
    return _echo_decoder.decode(record_request)


def in_progress(
    rid: uuid.UUID,
    echo: Echo,
    model: str,
    *,
    store: bool,
    previous: uuid.UUID | None,
    conversation_id: uuid.UUID | None,
    created_at: int,
) -> ResponseObject:
    """The Response as it stands before its reply: in progress, without output."""
    return _object(rid, echo, model, store, previous, conversation_id, created_at, "in_progress")


def stored_response(found: responses_app.Found, echo: Echo | None = None) -> ResponseObject:
    """A stored response, as the log says it ended. `echo`: its record's request, if the caller
    holds it decoded already (the create that wrote it)."""
    record, reply = found.record, found.reply
    echo = echo_of(record.request) if echo is None else echo
    model = record.model if reply is None or reply.generation is None else reply.generation.model
    conversation_id = record.conversation_id if record.in_conversation else None
    created = int(record.created_at.timestamp()) if record.created_at is not None else int(time.time())
    value = _object(
        record.response_id, echo, model, record.store, record.previous_response_id, conversation_id, created, found.status
    )
    value.next_response_ids = [response_id(i) for i in record.next_response_ids]
    if reply is not None:
        value.output = items.messages_to_items([reply])
        value.completed_at = int(reply.created_at.timestamp())
        value.usage = _usage(reply)
        if found.status == "incomplete":
            value.incomplete_details = {"reason": _incomplete_reason(reply)}
            for item in value.output:
                item["status"] = "incomplete"
    if found.status == "cancelled":
        for item in value.output:
            item["status"] = "incomplete"
    if found.failure is not None:
        kind, detail = found.failure
        value.error = ResponseError("rate_limit_exceeded" if kind == "upstream_rate_limited" else "server_error", detail or kind)
    return value


def started_response(found: responses_app.Found) -> ResponseObject:
    """A stored response as it stood before its reply (the first events of its stream)."""
    value = stored_response(found)
    value.status, value.output, value.usage, value.completed_at = "in_progress", [], None, None
    value.error, value.incomplete_details = None, None
    return value


def _object(
    rid: uuid.UUID,
    echo: Echo,
    model: str,
    store: bool,
    previous: uuid.UUID | None,
    conversation_id: uuid.UUID | None,
    created_at: int,
    status: str,
) -> ResponseObject:
    return ResponseObject(
        id=response_id(rid),
        created_at=created_at,
        completed_at=None,
        status=status,
        error=None,
        incomplete_details=None,
        instructions=echo.instructions,
        model=model,
        output=[],
        parallel_tool_calls=echo.parallel_tool_calls,
        previous_response_id=None if previous is None else response_id(previous),
        conversation=None if conversation_id is None else ConversationRef(items.conversation_id(conversation_id)),
        tool_choice=echo.tool_choice,
        tools=[_tool(t) for t in echo.tools],
        temperature=1.0 if echo.temperature is None else echo.temperature,
        top_p=1.0 if echo.top_p is None else echo.top_p,
        truncation=echo.truncation,
        text=_text(echo.text),
        reasoning=echo.reasoning,
        user=echo.user,
        usage=None,
        max_output_tokens=echo.max_output_tokens,
        max_tool_calls=echo.max_tool_calls,
        store=store,
        background=echo.background,
        service_tier=echo.service_tier,
        metadata=echo.metadata,
        safety_identifier=echo.safety_identifier,
        prompt_cache_key=echo.prompt_cache_key,
        presence_penalty=echo.presence_penalty,
        frequency_penalty=echo.frequency_penalty,
        top_logprobs=echo.top_logprobs,
        next_response_ids=[],
    )


def _tool(given: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the Response lists it: every key, null where the request left it out.
    (The request is kept as given; this is how it reads.)"""
    if given.get("type") != "function":
        return given
    return {"type": "function", "name": given.get("name"), "description": None, "parameters": None, "strict": None} | given


def _text(given: dict[str, Any]) -> dict[str, Any]:
    """`text` with a json_schema format's every key: no description is null, strict defaults to false."""
    fmt = given.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return given
    return {**given, "format": {**fmt, "description": fmt.get("description"), "strict": fmt.get("strict") is True}}


def _usage(reply: views.Message) -> ResponseUsage | None:
    g = reply.generation
    if g is None or g.prompt_tokens is None or g.completion_tokens is None:
        return None
    return ResponseUsage(
        input_tokens=g.prompt_tokens, output_tokens=g.completion_tokens, total_tokens=g.prompt_tokens + g.completion_tokens
    )


def _incomplete_reason(reply: views.Message) -> str:
    g = reply.generation
    assert g is not None
    if g.finish_reason == "length" or g.truncated is True:
        return "max_output_tokens"
    if g.finish_reason == "content_filter":
        return "content_filter"
    return "interrupted" if g.interruption is None else g.interruption.kind


# --- streaming -------------------------------------------------------------------------------------


class Events:
    """A streamed response's events, numbered from 0 (`sequence_number`), each sent with `event:`
    its type. The reply's pieces open and close its output items as they come: its reasoning
    (`rs_`), its message (`msg_`: output_text, then refusal) and each call (`fc_<i>`), with the ids
    the stored reply's items have (items.item_id), so the items streamed are the items read back."""

    def __init__(self, reply_id: uuid.UUID, *, starting_after: int = -1) -> None:
        self.reply_id = reply_id
        self.sequence = 0
        # A resumed stream (GET …?stream=true&starting_after=N): the events up to N are numbered
        # as before but not sent again.
        self.starting_after = starting_after
        self.count = 0  # output items opened
        self.current: tuple[str, int] | None = None  # ("reasoning" | "message" | "call", call index)
        self.index = 0  # output index of the current item
        self.parts: list[dict[str, Any]] = []  # the current message's parts (output_text, refusal)
        self.text = ""  # the current reasoning's text, or the current call's arguments
        self.call: dict[str, Any] = {}

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        if data["sequence_number"] <= self.starting_after:
            return b""
        return sse.event(kind, _encode(data))

    def response(self, kind: str, value: ResponseObject) -> bytes:
        return self.event(kind, response=value)

    def pieces(self, said: list[Said]) -> bytes:
        return b"".join(self._piece(piece) for piece in said)

    def _piece(self, piece: Said) -> bytes:
        out = b""
        if isinstance(piece, ReasoningDelta):
            if self.current != ("reasoning", 0):
                out += self.close() + self._open_reasoning()
            self.text += piece.text
            return out + self.event(
                "response.reasoning_text.delta", item_id=self._id(), output_index=self.index, content_index=0, delta=piece.text
            )
        if isinstance(piece, (TextDelta, RefusalDelta)):
            kind = "output_text" if isinstance(piece, TextDelta) else "refusal"
            if self.current != ("message", 0):
                out += self.close() + self._open_message()
            if not self.parts or self.parts[-1]["type"] != kind:
                out += self._close_part()
                opened: dict[str, Any] = (
                    {"type": "output_text", "text": "", "annotations": []} if kind == "output_text" else {"type": "refusal", "refusal": ""}
                )
                self.parts.append(opened)
                out += self.event(
                    "response.content_part.added",
                    item_id=self._id(), output_index=self.index, content_index=len(self.parts) - 1, part=dict(opened),
                )  # fmt: skip
            part = self.parts[-1]
            where: dict[str, Any] = {"item_id": self._id(), "output_index": self.index, "content_index": len(self.parts) - 1}
            if kind == "output_text":
                part["text"] += piece.text
                return out + self.event("response.output_text.delta", **where, delta=piece.text, logprobs=[])
            part["refusal"] += piece.text
            return out + self.event("response.refusal.delta", **where, delta=piece.text)
        if self.current != ("call", piece.index):
            out += self.close()
            self.current, self.index = ("call", piece.index), self.count
            self.count += 1
            self.call = {
                "id": self._id(),
                "type": "function_call",
                "call_id": piece.id or "",
                "name": piece.name or "",
                "arguments": "",
                "status": "in_progress",
            }
            out += self.event("response.output_item.added", output_index=self.index, item=dict(self.call))
        if piece.arguments:
            self.call["arguments"] += piece.arguments
            out += self.event(
                "response.function_call_arguments.delta", item_id=self._id(), output_index=self.index, delta=piece.arguments
            )
        return out

    def _id(self) -> str:
        assert self.current is not None
        kind, index = self.current
        if kind == "call":
            return items.item_id(self.reply_id, "call", index)
        return items.item_id(self.reply_id, "reasoning" if kind == "reasoning" else "message")

    def _open_reasoning(self) -> bytes:
        self.current, self.index, self.text = ("reasoning", 0), self.count, ""
        self.count += 1
        item = {"id": self._id(), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
        part = {"type": "reasoning_text", "text": ""}
        return self.event("response.output_item.added", output_index=self.index, item=item) + self.event(
            "response.content_part.added", item_id=self._id(), output_index=self.index, content_index=0, part=part
        )

    def _open_message(self) -> bytes:
        self.current, self.index, self.parts = ("message", 0), self.count, []
        self.count += 1
        item = {"id": self._id(), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        return self.event("response.output_item.added", output_index=self.index, item=item)

    def _close_part(self) -> bytes:
        if not self.parts:
            return b""
        part = self.parts[-1]
        where = {"item_id": self._id(), "output_index": self.index, "content_index": len(self.parts) - 1}
        if part["type"] == "output_text":
            done = self.event("response.output_text.done", **where, text=part["text"], logprobs=[])
        else:
            done = self.event("response.refusal.done", **where, refusal=part["refusal"])
        return done + self.event("response.content_part.done", **where, part=part)

    def close(self) -> bytes:
        """The done events of the item open, if any."""
        if self.current is None:
            return b""
        kind = self.current[0]
        where = {"item_id": self._id(), "output_index": self.index}
        if kind == "reasoning":
            part = {"type": "reasoning_text", "text": self.text}
            item = {"id": self._id(), "type": "reasoning", "summary": [], "content": [part], "status": "completed"}
            out = self.event("response.reasoning_text.done", **where, content_index=0, text=self.text)
            out += self.event("response.content_part.done", **where, content_index=0, part=part)
        elif kind == "message":
            out = self._close_part()
            item = {"id": self._id(), "type": "message", "role": "assistant", "status": "completed", "content": self.parts}
        else:
            item = {**self.call, "status": "completed"}
            out = self.event(
                "response.function_call_arguments.done", **where, name=self.call["name"], arguments=self.call["arguments"]
            )
        self.current = None
        return out + self.event("response.output_item.done", output_index=self.index, item=item)


_encode = msgspec.json.Encoder().encode
