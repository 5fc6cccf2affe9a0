"""convtree's Python client: `Client` (sync) and `AsyncClient`, typed with msgspec structs.

    from convtree.client import Client

    with Client("http://127.0.0.1:8000", key="ct_…") as ct:
        conversation = ct.create_conversation(title="Trip", system="You are terse.")
        for event in ct.stream_turn(conversation.id, "Hello", provider="echo"):
            ...
"""

from convtree.client._aio import AsyncClient
from convtree.client._core import Retry, ServerSentEvent, TurnEvent
from convtree.client._sync import Client
from convtree.client.errors import (
    BadRequest,
    Conflict,
    ConvtreeError,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ProblemError,
    RateLimited,
    ServerError,
    TransportError,
    TurnFailed,
    Unauthorized,
    Unavailable,
    UpstreamFailed,
)
from convtree.client.models import (
    AuditReport,
    Children,
    Context,
    ContextRun,
    Conversation,
    ConversationPage,
    Delta,
    Done,
    Event,
    EventPage,
    Generation,
    Health,
    Leaf,
    Leaves,
    Message,
    PathMessage,
    Problem,
    Redaction,
    Tree,
    TurnResult,
    TurnStarted,
    full_window,
    last_window,
    tokens_window,
)

__all__ = [
    "AsyncClient", "AuditReport", "BadRequest", "Children", "Client", "Conflict", "Context", "ContextRun", "Conversation",
    "ConversationPage", "ConvtreeError", "Delta", "Done", "Event", "EventPage", "Generation", "Health",
    "InvalidRequest", "Leaf", "Leaves", "Message", "NotFound", "PathMessage", "PreconditionFailed", "Problem",
    "ProblemError", "RateLimited", "Redaction", "Retry", "ServerError", "ServerSentEvent", "TransportError",
    "Tree", "TurnEvent", "TurnFailed", "TurnResult", "TurnStarted", "Unauthorized", "Unavailable",
    "UpstreamFailed", "full_window", "last_window", "tokens_window",
]
