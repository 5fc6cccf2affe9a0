"""What a turn carries from its beginning to its record: who replies to what, shown which context."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec

from service.app import window as windows
from service.domain import tree, views
from service.domain.events import ContextRun, context_runs
from service.domain.message import ContextItem, Utterance, context_item
from service.store.events import Tx
from service.upstream import ChatParams, ChatRequest, Provider

class Lease(msgspec.Struct, frozen=True):
    """Who generates a turn's reply (a server process, by id) and how long its registration of the
    reply lasts unless renewed: a pending reply whose owner has not renewed it for `seconds` is
    closed out (record.close_expired). The one length is Settings.reply_lease_seconds."""

    owner: uuid.UUID
    seconds: float


# OpenAI's request fields, with OpenAI's limits: each door that takes them declares them with these.
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
TopP = Annotated[float, msgspec.Meta(ge=0, le=1)]
Stop = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(max_length=4)]
Tools = Annotated[list[dict[str, Any]], msgspec.Meta(max_length=128)]
ToolChoice = Literal["none", "auto", "required"] | dict[str, Any]
TopLogprobs = Annotated[int, msgspec.Meta(ge=0, le=20)]
ReasoningEffort = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
CompletionMetadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(max_length=16),
]


class Params(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What a turn asks of the model besides its context: sampling, tools, output format, under
    OpenAI's names and with OpenAI's meaning; those not given are the provider's defaults. They
    are passed to the provider (each as its protocol has it: service/upstream) and recorded, as
    given, in the reply's generation (`params`), `metadata` included: it tags the completion, as
    OpenAI's does."""

    temperature: Temperature | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: int | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    reasoning_effort: ReasoningEffort | None = None
    metadata: CompletionMetadata | None = None


# How a reply's tool calls are stored: "given", as the provider gave them; "ollama", in the form an
# Ollama client sends them back (service/domain/ollama.py `as_resent`), so that its resent history
# continues the stored path.
ReplyForm = Literal["given", "ollama"]


class ReplySpec(msgspec.Struct, frozen=True, kw_only=True):
    """Who replies and what they are shown: provider and model (defaults: the registry's), window,
    params; and the form its reply is stored in."""

    provider: str | None = None
    model: str | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    params: Params = msgspec.field(default_factory=Params)
    reply_form: ReplyForm = "given"
    # This turn's own instructions (the Responses API's `instructions`): sent to the model as a
    # system message before the context, never stored on the path, so never carried to the next turn.
    instructions: str | None = None


@dataclass(frozen=True)
class Plan:
    """A turn whose user message is recorded and whose reply is pending: what the model call needs."""

    conversation_id: uuid.UUID
    family_id: uuid.UUID
    user_message: views.Message
    reply_id: uuid.UUID
    provider: Provider
    model: str
    context: list[ContextItem]
    runs: list[ContextRun]  # the context, as runs along the path it was taken from (events.context_runs)
    params: Params
    reply_form: ReplyForm = "given"
    instructions: str | None = None  # sent before the context, not part of it (ReplySpec)

    def request(self) -> ChatRequest:
        before = [] if self.instructions is None else [Utterance(role="system", content=self.instructions)]
        return ChatRequest(
            model=self.model,
            messages=[*before, *self.context],
            params=msgspec.convert(msgspec.to_builtins(self.params), ChatParams),
        )


@dataclass(frozen=True)
class Answered:
    """A retried turn that already has its reply: answered from the log, without calling the model."""

    conversation_id: uuid.UUID
    user_message: views.Message
    reply: views.Message
    by_key: bool = False  # a retry by Idempotency-Key (which replays the original status), not by id


class InFlight(Exception):
    """The reply a key launched is still being generated: wait until it is recorded, then look again."""

    def __init__(self, family_id: uuid.UUID, reply_id: uuid.UUID) -> None:
        super().__init__(f"reply {reply_id} is being generated")
        self.family_id = family_id
        self.reply_id = reply_id


class Launched(Protocol):
    """A reply whose model call was started while its turn was being recorded."""

    def confirm(self) -> None: ...  # the turn is committed: the reply counts

    def discard(self, error: BaseException) -> None: ...  # it is not: stop the model, record nothing


L = TypeVar("L", bound=Launched)


async def path_context(tx: Tx, scope: tree.Scope, parent: tree.Node | None) -> list[ContextItem]:
    """The context a new message under `parent` (one the conversation sees; None: the first
    message) is sent with, up to the parent, in one round trip."""
    if parent is None:
        return []
    return context_items(await tx.message_path(scope, parent.message_id))


def runs_of(path: list[ContextItem], sent: list[ContextItem]) -> list[ContextRun]:
    """The context `sent` (a window of `path`), as the reply records it."""
    return context_runs([c.id for c in path], [c.id for c in sent])


def context_items(path: list[views.PathMessage]) -> list[ContextItem]:
    # A redacted message's text is withheld from every read, and so from the model too.
    return [context_item(m.id, m) for m in path]
