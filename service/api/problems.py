"""Problem details (RFC 9457): the one table from error to status and stable `type`, and the handlers."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from service.domain import errors

log = logging.getLogger("convtree.api")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:convtree:problem:"


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


# error class -> (status, type slug, title). The first matching class in the MRO wins.
TABLE: dict[type[errors.ConvtreeError], tuple[int, str, str]] = {
    errors.ConversationNotFound: (404, "conversation-not-found", "Conversation not found"),
    errors.MessageNotFound: (404, "message-not-found", "Message not found"),
    errors.ParentNotFound: (404, "parent-not-found", "Parent message not found"),
    errors.NotFound: (404, "not-found", "Not found"),
    errors.ConversationIdConflict: (409, "conversation-id-conflict", "Conversation id already used"),
    errors.MessageIdConflict: (409, "message-id-conflict", "Message id already used"),
    errors.ParentStillGenerating: (409, "parent-still-generating", "Parent reply still being generated"),
    errors.ReplyInProgress: (409, "reply-in-progress", "Reply still being generated"),
    errors.Conflict: (409, "conflict", "Conflict"),
    errors.IdempotencyKeyReused: (422, "idempotency-key-reused", "Idempotency-Key reused"),
    errors.HeadMoved: (412, "head-moved", "Head has moved"),
    errors.ForkSourceMissing: (422, "fork-source-missing", "Fork source not present"),
    errors.InvalidExport: (422, "invalid-export", "Export does not verify"),
    errors.InvalidRequest: (422, "invalid-request", "Invalid request"),
    errors.Unauthorized: (401, "unauthorized", "Unauthorized"),
    errors.ServiceShuttingDown: (503, "shutting-down", "Service shutting down"),
    errors.ReplyInterrupted: (503, "reply-interrupted", "Reply interrupted"),
    errors.ReplyAbandoned: (503, "reply-abandoned", "Reply abandoned"),
    errors.UnknownProvider: (422, "unknown-provider", "Unknown model provider"),
    errors.UpstreamTimeout: (504, "upstream-timeout", "Model provider timed out"),
    errors.UpstreamUnavailable: (502, "upstream-unavailable", "Model provider unavailable"),
    errors.UpstreamRateLimited: (502, "upstream-rate-limited", "Model provider rate limited"),
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
    413: ("content-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-request", "Invalid request"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_type(slug: str) -> str:
    return TYPE_BASE + slug


def classify(exc: errors.ConvtreeError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]  # type: ignore[index]
    raise AssertionError("ConvtreeError is in the table")


def _response(request: Request, problem: Problem, headers: dict[str, str] | None = None) -> Response:
    problem.instance = request.url.path
    problem.request_id = request.scope.get("state", {}).get("request_id")
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def domain_error(request: Request, exc: errors.ConvtreeError) -> Response:
    status, slug, title = classify(exc)
    context = {k: v for k, v in exc.context.items() if v is not None} or None
    headers = {"WWW-Authenticate": 'Bearer realm="convtree"'} if status == 401 else None
    problem = Problem(type=problem_type(slug), title=title, status=status, detail=exc.detail, context=context)
    return _response(request, problem, headers)


def validation_error(request: Request, exc: ValidationException) -> Response:
    extra = exc.extra if isinstance(exc.extra, list) else None
    problem = Problem(
        type=problem_type("invalid-request"),
        title="Invalid request",
        status=422,
        detail=_validation_detail(exc),
        errors=[_plain(e) for e in extra] if extra else None,
    )
    return _response(request, problem)


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        status = 401
    slug, title = _HTTP_TYPES.get(status, ("http-error", "HTTP error"))
    problem = Problem(type=problem_type(slug), title=title, status=status, detail=exc.detail or None)
    headers = dict(exc.headers or {})
    return _response(request, problem, headers or None)


def internal_error(request: Request, exc: Exception) -> Response:
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


def responses(*kinds: type[errors.ConvtreeError] | int) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the errors a route can answer with (and the 500 any route can)."""
    specs: dict[int, ResponseSpec] = {}
    descriptions: dict[int, list[str]] = {}
    for kind in (*kinds, 500):
        if isinstance(kind, int):
            status, title = kind, _HTTP_TYPES[kind][1]
        else:
            status, _, title = TABLE[kind]
        descriptions.setdefault(status, []).append(title)
    for status, titles in descriptions.items():
        specs[status] = ResponseSpec(
            data_container=Problem,
            description="; ".join(titles),
            media_type=MEDIA_TYPE,
            generate_examples=False,
        )
    return specs


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
