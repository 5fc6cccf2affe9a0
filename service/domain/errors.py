"""Domain errors: every failure convtree can explain to a caller, as one tree.

ConvtreeError
├── NotFound
│   ├── ConversationNotFound
│   ├── MessageNotFound
│   ├── ParentNotFound
│   ├── ModelNotFound
│   └── ResponseNotFound
├── Conflict
│   ├── ConversationIdConflict
│   ├── MessageIdConflict
│   ├── ParentStillGenerating
│   ├── ReplyInProgress
│   ├── InheritedMessage
│   └── IncompleteToolCalls
├── IdempotencyKeyReused
├── StaleHead
├── JsonTooDeep
├── InvalidRequest
│   ├── InvalidMessage
│   │   └── MessageTooLarge
│   ├── ToolResultWithoutCall
│   ├── DuplicateToolResult
│   ├── PreviousResponseNotFound
│   ├── ContextTooLong
│   └── InvalidExport
│       └── ForkSourceMissing
├── Unauthorized
├── ReplyInterrupted
│   └── ServiceShuttingDown
├── ReplyAbandoned
├── Unavailable
│   ├── DatabaseUnavailable
│   └── DatabaseBusy
├── ReplyNotRecorded
└── UpstreamError
    ├── UnknownProvider
    ├── UpstreamTimeout
    ├── UpstreamUnavailable
    ├── UpstreamRateLimited
    ├── UpstreamRejected
    └── UpstreamProtocolError
        └── UpstreamTooLarge

The docstring of each class is its default message. The api room maps each class to an HTTP
status and a stable problem `type` in one table (service/api/problems.py).
"""

from __future__ import annotations


class ConvtreeError(Exception):
    """The request could not be completed."""

    def __init__(self, detail: str | None = None, **context: object) -> None:
        self.detail = detail or (type(self).__doc__ or "").strip()
        self.context = context
        super().__init__(self.detail)


class NotFound(ConvtreeError):
    """The resource does not exist."""


class ConversationNotFound(NotFound):
    """The conversation does not exist."""


class MessageNotFound(NotFound):
    """The message does not exist in this conversation."""


class ItemNotFound(NotFound):
    """The item is not among the conversation's items."""


class ModelNotFound(NotFound):
    """No configured provider offers this model."""


class ParentNotFound(NotFound):
    """The parent message does not exist in this conversation."""


class Conflict(ConvtreeError):
    """The request conflicts with the current state."""


class ConversationIdConflict(Conflict):
    """A conversation with this id already exists with different content."""


class MessageIdConflict(Conflict):
    """A message with this id already exists with different content or position."""



class ParentStillGenerating(Conflict):
    """The parent message is a reply that is still being generated."""


class ReplyInProgress(Conflict):
    """A reply to this message is still being generated."""


class InheritedMessage(Conflict):
    """The message belongs to a conversation this one was forked from: change it there."""


class IncompleteToolCalls(Conflict):
    """The context holds tool calls without their results: a model cannot be shown it. Append the
    results (`tool_call_ids` names the calls) first, or send them as the turn's own messages."""


class IdempotencyKeyReused(ConvtreeError):
    """This Idempotency-Key was already used with a different request."""


class StaleHead(ConvtreeError):
    """The conversation's head is no longer the expected message."""


class JsonTooDeep(ConvtreeError):
    """The JSON nests too deep."""


class InvalidRequest(ConvtreeError):
    """The request is not valid."""


class InvalidMessage(InvalidRequest):
    """The message is not valid. `field` names the field at fault."""


class MessageTooLarge(InvalidMessage):
    """The message is larger than a message may be (a part, or the whole). `field` names the field at fault."""


class ToolResultWithoutCall(InvalidRequest):
    """A tool message must answer a call of the assistant message it follows (directly, or after
    other results of the same calls): no such call has this `tool_call_id`."""


class DuplicateToolResult(InvalidRequest):
    """The call this tool message answers (`tool_call_id`) already has its result here."""


class InvalidExport(InvalidRequest):
    """The export does not verify: nothing was imported. `line` names the first bad line."""


class ForkSourceMissing(InvalidExport):
    """The export is of a fork whose source conversation is not here: import the source first."""


class Unauthorized(ConvtreeError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""


class ReplyInterrupted(ConvtreeError):
    """The reply was cut short: the text received until then is stored, marked `interrupted`."""


class ServiceShuttingDown(ReplyInterrupted):
    """The service is shutting down: the reply was cut short and stored as it stood."""


class ReplyAbandoned(ConvtreeError):
    """The reply was given up on before it could be stored (its lease ran out): the turn failed."""


class Unavailable(ConvtreeError):
    """The service cannot complete the request now; retry after a moment."""

    retry_after = 1  # seconds a client should wait before retrying (the Retry-After header)


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached; retry later (with the same Idempotency-Key, a write is done once)."""


class DatabaseBusy(Unavailable):
    """The database did not answer in time (a lock held, no free connection, a slow statement); retry later."""


class ReplyNotRecorded(ConvtreeError):
    """The reply could not be recorded yet: the database is too busy or cannot be reached. It is
    kept, and stored as interrupted with the text shown once the database takes it; a retry of the
    turn then finds it."""

    retry_after = 5  # seconds: a retry sooner is unlikely to find the reply stored


class UpstreamError(ConvtreeError):
    """The model provider failed to produce a reply."""


class UnknownProvider(UpstreamError):
    """No model provider with this name is configured."""


class UpstreamTimeout(UpstreamError):
    """The model provider did not answer in time."""


class UpstreamUnavailable(UpstreamError):
    """The model provider could not be reached."""


class UpstreamRateLimited(UpstreamError):
    """The model provider is rate limiting requests."""

    retry_after = 5  # seconds, when the provider did not say (its own Retry-After is in the context)


class UpstreamRejected(UpstreamError):
    """The model provider rejected the request."""


class UpstreamProtocolError(UpstreamError):
    """The model provider answered with something that is not a valid reply."""


class UpstreamTooLarge(UpstreamProtocolError):
    """The model provider sent a line larger than convtree reads; a reply ends there, as cut."""


class ReplyNotFound(NotFound):
    """No reply with this id is being generated or was recorded in this conversation."""


class ResponseNotFound(NotFound):
    """No stored response has this id (never created, created with `store: false`, or deleted)."""


class PreviousResponseNotFound(InvalidRequest):
    """The previous response cannot be continued: it does not exist, was created with `store: false`,
    or was deleted."""


class ContextTooLong(InvalidRequest):
    """The context does not fit the token window, and truncation is disabled."""


class ReplayRunNotFound(NotFound):
    """The replay run does not exist."""


class ReplayRunFinished(Conflict):
    """The replay run has already ended: there is nothing left to cancel."""
