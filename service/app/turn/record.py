"""Outcomes of turns: the reply (complete, or cut short) or the turn's failure, recorded exactly once;
and the close-out of replies whose server died before recording theirs: with the text their last
checkpoint holds (progress.py), or as failed when they had none."""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field

import msgspec

from service.app import writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.turn import progress
from service.app.turn.plan import Plan, ReplyForm
from service.domain import ollama, views
from service.domain import turns as rules
from service.domain.errors import (
    ConvtreeError,
    ReplyAbandoned,
    ReplyInterrupted,
    ServiceShuttingDown,
    UpstreamError,
)
from service.domain.events import Generation, Interruption, MessageAppended, TurnFailed
from service.domain.message import (
    UNSET,
    FunctionCall,
    FunctionToolCall,
    ToolCall,
    UnsetType,
    Utterance,
)
from service.store import pending
from service.store import progress as checkpoints
from service.store.events import Store
from service.upstream import (
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Said,
    TextDelta,
    ToolCallDelta,
)


@dataclass
class Assembled:
    """What a reply says besides its text, put together as it arrives: its tool calls, each from
    the fragments of one `index` (id, type and name as first given, arguments concatenated), its
    reasoning and its refusal."""

    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)

    def add(self, piece: ToolCallDelta | ReasoningDelta | RefusalDelta) -> None:
        if isinstance(piece, ReasoningDelta):
            self.reasoning.append(piece.text)
        elif isinstance(piece, RefusalDelta):
            self.refusal.append(piece.text)
        else:
            call = self.calls.setdefault(piece.index, {"arguments": ""})
            for name in ("id", "type", "name"):
                value = getattr(piece, name)
                if value and name not in call:
                    call[name] = value
            call["arguments"] += piece.arguments or ""

    def tool_calls(self) -> list[ToolCall] | UnsetType:
        """The calls in the order of their index. A call the model gave no id is given one
        (`call_` and 24 random hex digits), so that its result can name it."""
        if not self.calls:
            return UNSET
        return [
            FunctionToolCall(
                id=call.get("id") or "call_" + new_id().hex[:24],
                function=FunctionCall(name=call.get("name", ""), arguments=call["arguments"]),
            )
            for _, call in sorted(self.calls.items())
        ]

    @property
    def anything(self) -> bool:
        return bool(self.calls or self.reasoning or self.refusal)


@dataclass(frozen=True)
class Outcome:
    """What the model call came to: the text received (and the rest it said), and how it ended."""

    text: str
    finished: Finished | None  # the provider's last word, on a complete reply
    error: ConvtreeError | None  # the provider failed
    interruption: Interruption | None  # the reply was cut short (by us, the client, or the error)
    latency_ms: float
    first_token_ms: float | None
    truncated: bool = False  # the reply reached the cap (relay.MAX_REPLY_CHARS) and was cut there
    said: Assembled = field(default_factory=Assembled)  # its tool calls, reasoning and refusal

    @property
    def complete(self) -> bool:
        return self.finished is not None and self.error is None and self.interruption is None

    @property
    def received(self) -> bool:
        """Whether the model said anything at all."""
        return bool(self.text) or self.said.anything

    def reply(self) -> Utterance:
        """The assistant's message, as the model said it: its text as content (null when tool calls
        or a refusal carry the message instead, as OpenAI gives it), its tool calls, its reasoning
        and its refusal, each only when said."""
        said = self.said
        calls = said.tool_calls()
        refusal = "".join(said.refusal) if said.refusal else UNSET
        carried = calls is not UNSET or refusal is not UNSET
        return Utterance(
            role="assistant",
            content=self.text if self.text or not carried else None,
            tool_calls=calls,
            refusal=refusal,
            reasoning_content="".join(said.reasoning) if said.reasoning else UNSET,
        )

    def delayed(self) -> Outcome:
        """This outcome, to be recorded after its client was told it could not be: a complete reply
        becomes one interrupted by the delay (the client never saw it end), with all its text."""
        if not self.complete:
            return self
        return dataclasses.replace(self, interruption=RECORD_DELAYED)


RECORD_DELAYED = Interruption(
    kind="record_delayed",
    detail="The database could not be reached when the reply ended; it was stored once the database was back.",
)


@dataclass(frozen=True)
class Progress:
    """What the reply's checkpoints hold when it is recorded: how many were written, the pieces
    received since the last one, whether they are kept once the reply is recorded (a background
    response's) and, if none was written yet, the first one's `started`."""

    chunks: int = 0
    unsaved: list[Said] = field(default_factory=list)
    keep: bool = False
    started: bytes | None = None


async def record_outcome(
    store: Store,
    caller: Caller,
    owner: uuid.UUID,
    plan: Plan,
    outcome: Outcome,
    *,
    again: bool = False,
    progress_now: Progress | None = None,
) -> views.Message | None:
    """Store the reply (complete, or cut short with the text received) or, without any text, the
    turn's failure; and close its pending row. Returns the stored reply, if there is one.

    `again`: an earlier attempt failed with the database unreachable, perhaps while its COMMIT was
    on its way, so the pending row may be gone because that attempt was recorded after all.
    `progress_now`: its checkpoints, completed (kept) or dropped in the same transaction."""
    user_id = plan.user_message.id
    async with store.transaction() as tx:
        # The message replied to is read with the lock (a reply is decided under it): one round trip.
        w = await writes.lock(tx, caller, plan.conversation_id, 1, [user_id])  # conversations are never removed
        if not await pending.finish(tx, plan.family_id, plan.reply_id, owner):
            if again:
                stored = await tx.get_message(w.scope, plan.reply_id)
                if stored is not None:
                    return stored
                if not outcome.received:
                    return None  # a turn_failed closed it (the earlier attempt's, or the sweep's)
            raise ReplyAbandoned(reply_id=str(plan.reply_id))
        if progress_now is not None:
            if progress_now.keep and progress_now.unsaved:
                started = progress_now.started if progress_now.chunks == 0 else None
                await checkpoints.add(
                    tx, plan.family_id, plan.reply_id, progress_now.chunks, progress.encode(progress_now.unsaved), started
                )
            elif not progress_now.keep and progress_now.chunks:
                await checkpoints.drop(tx, plan.family_id, plan.reply_id)
        if outcome.complete or outcome.received:
            generation = _generation(plan, outcome)
            return await _write_reply(w, plan.conversation_id, user_id, plan.reply_id, plan.reply_form, outcome, generation)
        kind, detail = failure_of(outcome)
        failure = TurnFailed(
            reply_id=plan.reply_id,
            user_message_id=user_id,
            provider=plan.provider.name,
            model=plan.model,
            error=kind,
            detail=detail,
        )
        await w.write(rules.decide_failure(w.state, failure))
        return None


async def _write_reply(
    w: writes.Locked,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    reply_id: uuid.UUID,
    form: ReplyForm,
    outcome: Outcome,
    generation: Generation,
) -> views.Message:
    user = w.nodes.get(user_id)  # read with the lock (writes.lock's ids)
    reply = outcome.reply()
    if form == "ollama":
        reply = ollama.as_resent(reply)
    events = rules.decide_reply(w.see(user), user, user_id, reply_id, reply, generation, writes.new_digest_key())
    sealed = await w.write(events)
    event = events[0]
    assert isinstance(event, MessageAppended)
    return views.message_of(event, conversation_id, sealed[0].envelope.seq, w.now)


async def close_expired(store: Store, batch: int = 100) -> int:
    """Close out, with `turn_failed`, the pending replies whose owner stopped renewing their lease."""
    closed = 0
    while True:
        rows = await pending.expired(store, batch)
        for row in rows:
            closed += await _close_out(store, row)
        if len(rows) < batch:
            return closed


async def _close_out(store: Store, row: pending.PendingReply) -> int:
    sweeper = Caller(tenant=row.tenant, actor=row.actor, request_id=row.request_id)
    async with store.transaction() as tx:
        w = await writes.lock(tx, sweeper, row.conversation_id, 1, [row.user_message_id])  # never removed
        if not await pending.expire(tx, row.family_id, row.reply_id):
            return 0  # its owner finished it after all, or another process closed it out
        chunks = await checkpoints.chunks(tx, row.family_id, row.reply_id)
        if chunks and chunks[0].chunk == 0 and chunks[0].started is not None:
            # The owner died after its first checkpoint: the reply is what its checkpoints hold.
            started = progress.decode_started(chunks[0].started)
            outcome = assembled([piece for c in chunks for piece in progress.decode(c.pieces)])
            since_first = (chunks[-1].written_at - chunks[0].written_at).total_seconds() * 1000
            generation = msgspec.structs.replace(
                started.generation, latency_ms=round(started.generation.latency_ms + since_first, 3)
            )
            await _write_reply(
                w, row.conversation_id, row.user_message_id, row.reply_id, started.reply_form, outcome, generation
            )
            if not started.keep:
                await checkpoints.drop(tx, row.family_id, row.reply_id)
            return 1
        failure = TurnFailed(
            reply_id=row.reply_id,
            user_message_id=row.user_message_id,
            provider=row.provider,
            model=row.model,
            error="abandoned",
            detail="The server generating this reply stopped before it finished.",
        )
        await w.write(rules.decide_failure(w.state, failure))
        return 1


def assembled(pieces: list[Said], interruption: Interruption | None = None) -> Outcome:
    """The reply `pieces` say, as an outcome cut short (`interruption`: OWNER_LOST by default)."""
    text: list[str] = []
    said = Assembled()
    for piece in pieces:
        if isinstance(piece, TextDelta):
            text.append(piece.text)
        else:
            said.add(piece)
    return Outcome("".join(text), None, None, interruption or OWNER_LOST, 0.0, None, said=said)


OWNER_LOST = Interruption(
    kind="owner_lost",
    detail="The server generating this reply stopped before it finished; the text it had checkpointed was kept.",
)


def failure_of(outcome: Outcome) -> tuple[str, str]:
    """(kind, detail) of a turn that ended without a complete reply."""
    if outcome.error is not None:
        return error_kind(outcome.error), _words(outcome.error.detail)
    assert outcome.interruption is not None
    return outcome.interruption.kind, outcome.interruption.detail


def error_kind(exc: BaseException) -> str:
    """A stable snake_case name for an error: UpstreamTimeout -> upstream_timeout."""
    return _kind(type(exc))


def _kind(cls: type[BaseException]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def error_of(kind: str, detail: str) -> ConvtreeError:
    """The error a turn's client was given, from what its record keeps of it (the kind its reply's
    interruption or its `turn_failed` names, and the detail): `error_kind` read backwards, an
    interruption as `ReplyInterrupted` (the service's shutdown as `ServiceShuttingDown`), a sweep's
    close-out of a reply that said nothing as `ReplyAbandoned`, a kind no longer known as `UpstreamError`."""
    if kind == SHUTDOWN_KIND:
        return ServiceShuttingDown(detail or None)
    if kind == ABANDONED_KIND:
        return ReplyAbandoned(detail or None)
    if kind in INTERRUPTION_KINDS:
        return ReplyInterrupted(detail or None)
    cls = _errors().get(kind, UpstreamError)
    return cls(detail or None)


def _errors() -> dict[str, type[ConvtreeError]]:
    found: dict[str, type[ConvtreeError]] = {}
    todo: list[type[ConvtreeError]] = [ConvtreeError]
    while todo:
        cls = todo.pop()
        found.setdefault(_kind(cls), cls)
        todo.extend(cls.__subclasses__())
    return found


SHUTDOWN_KIND = "shutdown"
ABANDONED_KIND = "abandoned"
# What cuts a reply short without an error (relay.py's and this module's interruptions): the
# kinds a recorded reply or a turn_failed may name.
INTERRUPTION_KINDS = frozenset(
    {"client_disconnected", "discarded", "cancelled", "lease_lost", "owner_lost", "record_delayed"}
)


# What a provider says about its reply (the model that answered, the response id, the finish
# reason; the words of its error) is kept to these lengths: an upstream cannot make the event
# that records it any larger.
MAX_SAID_CHARS = 200
MAX_DETAIL_CHARS = 1000


def storable(text: str) -> str:
    """Upstream text as a plain append would take it: PostgreSQL text (and text extracted from a
    stored payload) cannot hold U+0000, so it becomes U+FFFD, the replacement character."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _said(value: str | None) -> str | None:
    return None if value is None else storable(value[:MAX_SAID_CHARS])


def _words(detail: str) -> str:
    return storable(detail[:MAX_DETAIL_CHARS])


def generation(plan: Plan, outcome: Outcome) -> Generation:
    """How the model produced the reply `outcome` holds, as its event records it."""
    return _generation(plan, outcome)


def _generation(plan: Plan, outcome: Outcome) -> Generation:
    finished = outcome.finished or Finished()
    interruption = outcome.interruption
    if not outcome.complete and interruption is None:
        assert outcome.error is not None
        interruption = Interruption(kind=error_kind(outcome.error), detail=_words(outcome.error.detail))
    return Generation(
        provider=plan.provider.name,
        model=_said(finished.model) or plan.model,
        requested_model=plan.model,
        finish_reason=_said(finished.finish_reason) if outcome.complete else "interrupted",
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        latency_ms=outcome.latency_ms,
        first_token_ms=outcome.first_token_ms,
        response_id=_said(finished.response_id),
        context=plan.runs,
        params=msgspec.to_builtins(plan.params),
        interruption=interruption,
        truncated=True if outcome.truncated else msgspec.UNSET,
    )
