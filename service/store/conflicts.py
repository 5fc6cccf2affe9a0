"""Unique violations as domain errors, by the name of the constraint that caught them: the
uniqueness constraints of schema.sql are convtree's concurrency guards, and this is the one place
their violations are translated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from service.domain.errors import Conflict, ConversationIdConflict, MessageIdConflict

# Each guard of schema.sql, by constraint (or unique index) name, and the conflict it reports.
GUARDS: dict[str, type[Conflict]] = {
    "conversations_pkey": ConversationIdConflict,  # (tenant, conversation_id)
    "events_message": MessageIdConflict,  # a message id, once per family
    "events_one_root": MessageIdConflict,  # one root message per family
    "bodies_pkey": MessageIdConflict,  # a message's body, once
    "pending_replies_pkey": MessageIdConflict,  # a reply's id, announced before its message exists
}


def conflict(exc: asyncpg.UniqueViolationError, **details: str | None) -> Conflict:
    """The domain error for a unique violation, by its constraint. `details` gives, per error type
    name, the detail to say (None: the type's own), and `conversation_id` the conversation's id
    for a ConversationIdConflict. A violation of no known guard is a bug, raised as it is."""
    error = GUARDS.get(exc.constraint_name or "")
    if error is None:
        raise exc
    detail = details.get(error.__name__)
    if error is ConversationIdConflict:
        return ConversationIdConflict(detail, conversation_id=details.get("conversation_id"))
    return error(detail)


@contextmanager
def guarded(**details: str | None) -> Iterator[None]:
    """Unique violations inside, raised as the domain's conflicts (see `conflict`)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise conflict(exc, **details) from exc
