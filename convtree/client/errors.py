"""What can go wrong talking to convtree, as one tree of exceptions.

    ConvtreeError
    ├── TransportError       the server could not be reached, or the connection broke (after retries)
    └── ProblemError         the server answered with a problem (RFC 9457): status, type, title, …
        ├── BadRequest           400
        ├── Unauthorized         401
        ├── NotFound             404
        ├── Conflict             409
        ├── PreconditionFailed   412 (the head moved: `expected_head` was stale)
        ├── InvalidRequest       422
        ├── RateLimited          429
        ├── ServerError          500
        ├── UpstreamFailed       502, 504 (the model provider failed or timed out)
        ├── Unavailable          503
        └── TurnFailed           a streamed turn's `error` event (with the reply as stored, if any)
"""

from __future__ import annotations

from typing import Any

from convtree.client.models import Message, Problem


class ConvtreeError(Exception):
    pass


class TransportError(ConvtreeError):
    """The server could not be reached, or the connection broke."""


class ProblemError(ConvtreeError):
    """A problem the server answered with."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}" + (f": {problem.detail}" if problem.detail else ""))
        self.problem = problem
        self.status = problem.status
        self.type = problem.type
        self.title = problem.title
        self.detail = problem.detail
        self.request_id = problem.request_id
        self.context: dict[str, Any] = problem.context or {}
        self.errors: list[dict[str, Any]] = problem.errors or []

    @property
    def slug(self) -> str:
        """The last part of `type` (`conversation-not-found`, `head-moved`, …), handy in `match`."""
        return self.type.replace("/", ":").rpartition(":")[2]


class BadRequest(ProblemError):
    pass


class Unauthorized(ProblemError):
    pass


class NotFound(ProblemError):
    pass


class Conflict(ProblemError):
    pass


class PreconditionFailed(ProblemError):
    pass


class InvalidRequest(ProblemError):
    pass


class RateLimited(ProblemError):
    pass


class ServerError(ProblemError):
    pass


class UpstreamFailed(ProblemError):
    pass


class Unavailable(ProblemError):
    pass


class TurnFailed(ProblemError):
    """A streamed turn ended with an `error` event; `message` is the reply as stored, if any text came."""

    def __init__(self, problem: Problem, message: Message | None) -> None:
        super().__init__(problem)
        self.message = message


BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: InvalidRequest,
    429: RateLimited,
    500: ServerError,
    502: UpstreamFailed,
    503: Unavailable,
    504: UpstreamFailed,
}


def problem_error(problem: Problem) -> ProblemError:
    return BY_STATUS.get(problem.status, ProblemError)(problem)
