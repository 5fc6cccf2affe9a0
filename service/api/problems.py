"""Problem details (RFC 9457): the one table from error to status and stable `type`, and the handlers."""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from service.domain import errors

log = logging.getLogger("convtree.api")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:convtree:problem:"


class OpenAIError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """OpenAI's error object, which OpenAI's clients read from a failed request: `type` is its class
    of error, `code` the problem's `type` slug."""

    message: str
    type: str  # invalid_request_error, authentication_error, not_found_error, server_error, …
    param: str | None
    code: str | None
    context: dict[str, Any] | None = None  # the problem's: OpenAI's clients hand on only this object


class OpenAIErrorBody(msgspec.Struct):
    """How the OpenAI-compatible door answers an error, as OpenAI does: `{"error": {...}}`, whose
    `message` OpenAI's clients show."""

    error: OpenAIError


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem. `type` is stable per kind of error; `detail` is for people."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # for validation problems: which field, what is wrong
    context: dict[str, Any] | None = None
    # On the Ollama door (`/api/`): Ollama's error, a string (the detail), which its clients read.
    error: str | None = None


# The OpenAI-compatible door answers its errors as OpenAI does (OpenAIErrorBody, application/json),
# not as problems: OpenAI's clients read `error.message`, and show nothing else. The door is every
# path under OPENAI_BASE (routes convtree does not serve included), and the two aliases of its first
# routes under /v1.
OPENAI_BASE = "/openai/v1"
OPENAI_DOORS = frozenset({"/v1/chat/completions", "/v1/models"})


def openai_door(path: str) -> bool:
    """Whether `path` (a request's, or a route's template) is of the OpenAI-compatible door."""
    return path in OPENAI_DOORS or path == OPENAI_BASE or path.startswith(OPENAI_BASE + "/")


# The Responses API answers a request it refuses with 400 (not 422), as OpenAI's clients expect
# (BadRequestError).
RESPONSES_DOOR = OPENAI_BASE + "/responses"

OPENAI_MEDIA_TYPE = "application/json"
OLLAMA_DOOR = "/api/"  # every path under it, routes convtree does not serve included
_OPENAI_TYPES = {  # status -> OpenAI's error type; 5xx: server_error; any other: invalid_request_error
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    412: "invalid_request_error",
    422: "invalid_request_error",
    403: "permission_error",
    429: "rate_limit_error",
}


# error class -> (status, type slug, title). The first matching class in the MRO wins.
TABLE: dict[type[errors.ConvtreeError], tuple[int, str, str]] = {
    errors.ConversationNotFound: (404, "conversation-not-found", "Conversation not found"),
    errors.MessageNotFound: (404, "message-not-found", "Message not found"),
    errors.ParentNotFound: (404, "parent-not-found", "Parent message not found"),
    errors.ItemNotFound: (404, "item-not-found", "Item not found"),
    errors.ModelNotFound: (404, "model-not-found", "Model not found"),
    errors.ReplyNotFound: (404, "reply-not-found", "Reply not found"),
    errors.ResponseNotFound: (404, "response-not-found", "Response not found"),
    errors.ReplayRunNotFound: (404, "replay-run-not-found", "Replay run not found"),
    errors.NotFound: (404, "not-found", "Not found"),
    errors.ConversationIdConflict: (409, "conversation-id-conflict", "Conversation id already used"),
    errors.MessageIdConflict: (409, "message-id-conflict", "Message id already used"),
    errors.ParentStillGenerating: (409, "parent-still-generating", "Parent reply still being generated"),
    errors.ReplyInProgress: (409, "reply-in-progress", "Reply still being generated"),
    errors.InheritedMessage: (409, "message-inherited", "Message inherited from another conversation"),
    errors.IncompleteToolCalls: (409, "incomplete-tool-calls", "Tool calls without their results"),
    errors.ReplayRunFinished: (409, "replay-run-finished", "Replay run already ended"),
    errors.Conflict: (409, "conflict", "Conflict"),
    errors.IdempotencyKeyReused: (422, "idempotency-key-reused", "Idempotency-Key reused"),
    errors.StaleHead: (412, "head-moved", "Head has moved"),
    errors.ForkSourceMissing: (422, "fork-source-missing", "Fork source not present"),
    errors.InvalidExport: (422, "invalid-export", "Export does not verify"),
    errors.MessageTooLarge: (413, "message-too-large", "Message too large"),
    errors.InvalidMessage: (422, "invalid-message", "Invalid message"),
    errors.ToolResultWithoutCall: (422, "tool-result-without-call", "Tool result answers no call"),
    errors.DuplicateToolResult: (422, "duplicate-tool-result", "Tool call already answered"),
    errors.PreviousResponseNotFound: (400, "previous-response-not-found", "Previous response not found"),
    errors.ContextTooLong: (400, "context-length-exceeded", "Context too long"),
    errors.InvalidRequest: (422, "invalid-request", "Invalid request"),
    errors.JsonTooDeep: (400, "json-too-deep", "JSON nested too deep"),
    errors.Unauthorized: (401, "unauthorized", "Unauthorized"),
    errors.ServiceShuttingDown: (503, "shutting-down", "Service shutting down"),
    errors.ReplyInterrupted: (503, "reply-interrupted", "Reply interrupted"),
    errors.ReplyAbandoned: (503, "reply-abandoned", "Reply abandoned"),
    errors.DatabaseUnavailable: (503, "database-unavailable", "Database unavailable"),
    errors.DatabaseBusy: (503, "database-busy", "Database busy"),
    errors.Unavailable: (503, "unavailable", "Service unavailable"),
    errors.ReplyNotRecorded: (503, "reply-not-recorded", "Reply not recorded yet"),
    errors.UnknownProvider: (422, "unknown-provider", "Unknown model provider"),
    errors.UpstreamTimeout: (504, "upstream-timeout", "Model provider timed out"),
    errors.UpstreamUnavailable: (502, "upstream-unavailable", "Model provider unavailable"),
    errors.UpstreamRateLimited: (429, "upstream-rate-limited", "Model provider rate limited"),
    errors.UpstreamRejected: (502, "upstream-rejected", "Model provider rejected the request"),
    errors.UpstreamProtocolError: (502, "upstream-protocol-error", "Model provider answered badly"),
    errors.UpstreamError: (502, "upstream-error", "Model provider failed"),
    errors.ConvtreeError: (400, "bad-request", "Bad request"),
}

# HTTP-level errors litestar raises before a handler runs.
_HTTP_TYPES = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    408: ("request-timeout", "Request timeout"),
    413: ("content-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-request", "Invalid request"),
    429: ("too-many-requests", "Too many requests"),
    431: ("header-fields-too-large", "Request header fields too large"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_type(slug: str) -> str:
    return TYPE_BASE + slug


def classify(exc: errors.ConvtreeError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    raise AssertionError("ConvtreeError is in the table")


def _response(request: Request[Any, Any, Any], problem: Problem, headers: dict[str, str] | None = None) -> Response[Any]:
    problem.instance = request.url.path
    problem.request_id = request.scope.get("state", {}).get("request_id")
    if problem.instance.startswith(RESPONSES_DOOR) and problem.status == 422:
        problem.status = 400
    if openai_door(problem.instance):
        return Response(
            content=msgspec.json.encode(OpenAIErrorBody(openai_error(problem))),
            status_code=problem.status,
            media_type=OPENAI_MEDIA_TYPE,
            headers=headers,
        )
    if problem.instance.startswith(OLLAMA_DOOR):
        problem.error = ollama_error(problem)
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


# OpenAI's own codes, where OpenAI's clients (and the Agents SDK) look for them; every other
# problem's code is its slug.
_OPENAI_CODES = {
    "previous-response-not-found": "previous_response_not_found",
    "context-length-exceeded": "context_length_exceeded",
}


def openai_error(problem: Problem) -> OpenAIError:
    """The problem as OpenAI's error object: its detail as the message (for a request that does not
    validate, what is wrong with which field), the field at fault as `param`."""
    if problem.status >= 500:
        kind = "server_error"
    else:
        kind = _OPENAI_TYPES.get(problem.status, "invalid_request_error")
    param = (problem.context or {}).get("parameter")
    message = problem.detail or problem.title
    if problem.errors:
        first = problem.errors[0]
        if param is None:
            param = first.get("key")
        said = first.get("message")
        if said and said != message:
            message = f"{message} {param}: {said}" if param is not None else f"{message} {said}"
    slug = problem.type.removeprefix(TYPE_BASE)
    return OpenAIError(
        message=message,
        type=kind,
        param=None if param is None else str(param),
        code=_OPENAI_CODES.get(slug, slug),
        context=problem.context,
    )


def ollama_error(problem: Problem) -> str:
    """Ollama's error: `{"error": "<message>"}`, the text its clients raise (ResponseError)."""
    return problem.detail or problem.title


def domain_error(request: Request[Any, Any, Any], exc: errors.ConvtreeError) -> Response[Any]:
    if isinstance(exc, errors.Unavailable):
        request.scope["state"]["database_error"] = exc  # counted by the request's observer, not logged as a bug
    return _response(request, *domain_problem(exc))


def domain_problem(exc: errors.ConvtreeError) -> tuple[Problem, dict[str, str] | None]:
    """The problem an error is, and the headers that go with it."""
    status, slug, title = classify(exc)
    context = {k: v for k, v in exc.context.items() if v is not None} or None
    headers = {"WWW-Authenticate": 'Bearer realm="convtree"'} if status == 401 else retry_after(exc)
    problem = Problem(type=problem_type(slug), title=title, status=status, detail=exc.detail, context=context)
    return problem, headers


def retry_after(exc: errors.ConvtreeError) -> dict[str, str] | None:
    """The Retry-After header of an error that passes if the client waits: the upstream's own
    figure when it gave one (in the context), else the error's default."""
    seconds = exc.context.get("retry_after")
    if seconds is None:
        seconds = getattr(exc, "retry_after", None)
    if not isinstance(seconds, (int, float)):
        return None
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else None
    if extra and any(_missing_body(item) for item in extra):
        extra = [_BODY_MISSING]
        exc = ValidationException(detail=_BODY_MISSING["message"])
    problem = Problem(
        type=problem_type("invalid-request"),
        title="Invalid request",
        status=422,
        detail=_validation_detail(exc),
        errors=[_plain(e) for e in extra] if extra else None,
    )
    return _response(request, problem)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        status = 401
    slug, title = _HTTP_TYPES.get(status, ("http-error", "HTTP error"))
    problem = Problem(type=problem_type(slug), title=title, status=status, detail=exc.detail or None)
    headers = dict(exc.headers or {})
    return _response(request, problem, headers or None)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Logged once, with its traceback, in the request's own line (service.api.observe).
    request.scope["state"]["error"] = exc
    problem = Problem(
        type=problem_type("internal-error"),
        title="Internal server error",
        status=500,
        detail="The server failed to complete the request; it has been logged under this request id.",
    )
    return _response(request, problem)


HANDLERS: dict[Any, Any] = {
    errors.ConvtreeError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: internal_error,
}


def title_of(status: int) -> str:
    """The title of a problem answered with an HTTP status of its own (not one of convtree's errors)."""
    return _HTTP_TYPES[status][1]


RETRY_AFTER_NOTE = " (retry after the seconds of its Retry-After header)"


def responses(
    *kinds: type[errors.ConvtreeError] | int, database: bool = True, openai: bool = False
) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the errors a route can answer with, and those any route can (a
    request too slow to arrive, headers too large, a bug) and, where it uses the `database`, the
    503s with a Retry-After header of a database away or busy. `openai`: a route of the
    OpenAI-compatible door, whose errors are OpenAI's error object (openai_door)."""
    specs: dict[int, ResponseSpec] = {}
    descriptions: dict[int, list[str]] = {}
    always = (408, 431, errors.DatabaseUnavailable, errors.DatabaseBusy, 500) if database else (408, 431, 500)
    for kind in (*kinds, *always):
        if isinstance(kind, int):
            status, title = kind, _HTTP_TYPES[kind][1]
        else:
            status, _, title = TABLE[kind]
        if title not in descriptions.setdefault(status, []):
            descriptions[status].append(title)
    for status, titles in descriptions.items():
        specs[status] = ResponseSpec(
            data_container=OpenAIErrorBody if openai else Problem,
            description="; ".join(titles) + (RETRY_AFTER_NOTE if status == 503 and database else ""),
            media_type=OPENAI_MEDIA_TYPE if openai else MEDIA_TYPE,
            generate_examples=False,
        )
    return specs


# litestar's report of a JSON body that was not sent at all: the handler's `data` argument is missing.
_BODY_MISSING = {
    "message": "The request body is missing: this route takes a JSON object.",
    "key": "body",
    "source": "body",
}


def _missing_body(item: Any) -> bool:
    return isinstance(item, dict) and item.get("key") == "data" and item.get("message") == "'data'"


def _validation_detail(exc: ValidationException) -> str:
    detail = exc.detail or "Validation failed"
    return "The request is not valid." if detail.startswith("Validation failed for") else detail


def _plain(item: Any) -> dict[str, Any]:
    return (
        {
            str(k): v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
            for k, v in dict(item).items()
        }
        if isinstance(item, dict)
        else {"message": str(item)}
    )
