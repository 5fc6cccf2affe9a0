"""History queries: the event feeds, audit and export cursors, redaction and erasure, and import."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg

from service.domain import views
from service.domain.audit import Checked
from service.domain.errors import (
    ConversationIdConflict,
    InvalidExport,
    MessageIdConflict,
)
from service.domain.events import Columns, Envelope, Sealed
from service.store.events import Tx, body_arrays, event_arrays
from service.store.queries import Q

BATCH = 500  # rows per round trip when a cursor walks a whole conversation


def _sealed(row: asyncpg.Record, digest_key: bytes | None = None) -> Sealed:
    envelope = Envelope(
        seq=row["seq"],
        tenant=row["tenant"],
        conversation_id=row["conversation_id"],
        family_id=row["family_id"],
        actor=row["actor"],
        request_id=row["request_id"],
        created_at=row["created_at"],
    )
    columns = Columns(
        row["type"],
        row["message_id"],
        row["parent_id"],
        row["role"],
        row["depth"],
        row["body_sha256"],
        row["payload"],
    )
    return Sealed(envelope, columns, row["hash"], digest_key)


# --- feeds ------------------------------------------------------------------------------------


async def conversation_events(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID, after: int, limit: int
) -> list[Sealed]:
    rows = await tx.conn.fetch(Q["conversation_events"], family_id, conversation_id, after, limit)
    return [_sealed(r) for r in rows]


async def feed_frontier(tx: Tx, tenant: str, lock_timeout_ms: int) -> int | None:
    """The tenant's greatest final sequence number; None when in-flight writers outlast the timeout."""
    try:
        return await tx.conn.fetchval(Q["feed_frontier"], tenant, f"{lock_timeout_ms}ms")
    except asyncpg.LockNotAvailableError:
        return None


async def tenant_events(tx: Tx, tenant: str, after: int, frontier: int, limit: int) -> list[Sealed]:
    rows = await tx.conn.fetch(Q["tenant_events"], tenant, after, frontier, limit)
    return [_sealed(r) for r in rows]


# --- audit and export -------------------------------------------------------------------------


async def audit_batches(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID
) -> AsyncIterator[list[Checked]]:
    """The conversation's events in order with their bodies' digests, a batch at a time (needs a transaction)."""
    cursor = await tx.conn.cursor(Q["audit_events"], family_id, conversation_id)
    while rows := await cursor.fetch(BATCH):
        yield [Checked(_sealed(r), r["body_digest"]) for r in rows]


async def audit_summary(
    tx: Tx, tenant: str, conversation_id: uuid.UUID
) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
    """The conversation's summary row as stored, and as its whole log folds it (replay's fold)."""
    stored = await tx.conn.fetchrow(Q["audit_summary"], tenant, conversation_id)
    folded = await tx.conn.fetchrow(Q["conversation_as_of"], tenant, conversation_id, _LAST_SEQ, None)
    return stored, folded


_LAST_SEQ = 2**63 - 1  # "after every event"


async def export_page(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID, after: int
) -> list[tuple[Sealed, str | None]]:
    """The conversation's next events after `after`, each with its body where one may be served."""
    rows = await tx.conn.fetch(Q["export_events"], family_id, conversation_id, after, BATCH)
    return [(_sealed(r, r["digest_key"]), r["content"]) for r in rows]


# --- redaction and erasure ----------------------------------------------------------------------


async def find_redaction(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> views.Redaction | None:
    row = await tx.conn.fetchrow(Q["find_redaction"], family_id, message_id)
    if row is None:
        return None
    return views.Redaction(
        at=row["redacted_at"], by=row["redacted_by"], reason=row["redaction_reason"], erased=row["redaction_erased"]
    )


async def find_body(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> str | None:
    return await tx.conn.fetchval(Q["find_body"], family_id, message_id)


async def erase_body(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> None:
    await tx.conn.execute(Q["erase_body"], family_id, message_id)


async def find_quoting_responses(
    tx: Tx, tenant: str, id_text: bytes, content_text: bytes | None
) -> list[tuple[str, bytes]]:
    rows = await tx.conn.fetch(Q["find_quoting_responses"], tenant, id_text, content_text)
    return [(r["key"], r["response"]) for r in rows]


async def replace_response(tx: Tx, tenant: str, key: str, response: bytes) -> None:
    await tx.conn.execute(Q["replace_response"], tenant, key, response)


# --- import -------------------------------------------------------------------------------------


async def fork_base_path(
    tx: Tx, tenant: str, family_id: uuid.UUID, source_id: uuid.UUID, base_id: uuid.UUID
) -> dict[uuid.UUID, int]:
    """The path root→base a fork of `source_id` at `base_id` inherits (empty: the source does not show it)."""
    rows = await tx.conn.fetch(Q["fork_base"], family_id, base_id, source_id, tenant)
    return {r["message_id"]: r["depth"] for r in rows}


async def import_conversation(
    tx: Tx, tenant: str, sealed: list[Sealed], bodies: dict[uuid.UUID, str]
) -> bytes:
    """Write imported events (already sealed here) and their bodies, then the conversation's summary
    folded from them; returns the summary's chain head."""
    first = sealed[0].envelope
    try:
        await tx.conn.execute(
            Q["import_events"],
            tenant,
            first.conversation_id,
            first.family_id,
            *event_arrays(sealed),
            # Unlike an append, each imported event keeps its own actor, request and time.
            [s.envelope.actor for s in sealed],
            [s.envelope.request_id for s in sealed],
            [s.envelope.created_at for s in sealed],
            *body_arrays(bodies, sealed),
        )
        return await tx.conn.fetchval(
            Q["import_summary"], tenant, first.conversation_id, first.family_id, sealed[-1].envelope.seq
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "conversations_pkey":
            raise ConversationIdConflict(
                "A conversation with this id already exists.", conversation_id=str(first.conversation_id)
            ) from exc
        raise MessageIdConflict("A message of the export already exists in its fork family.") from exc
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        # The checks before the write mirror the database's; this is the backstop for the rest
        # (a text PostgreSQL cannot store, say), refused as the file's fault, never a 500.
        raise InvalidExport(f"The database refused the export: {exc}", reason="refused-by-database") from exc


async def unreadable_payloads(tx: Tx) -> list[asyncpg.Record]:
    """Every event whose payload holds text PostgreSQL cannot (rows: seq, tenant, conversation_id, type)."""
    return await tx.conn.fetch(Q["unreadable_payloads"])
