"""History queries: the event feeds, audit and export cursors, redaction and erasure, and import."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec

from service.domain import views
from service.domain.audit import Checked
from service.domain.errors import InvalidExport
from service.domain.events import Sealed
from service.domain.stored import Stored
from service.store import rows as r
from service.store.appends import log_arrays
from service.store.conflicts import guarded
from service.store.events import Tx
from service.store.queries import Q

BATCH = 500  # rows per round trip when a cursor walks a whole conversation


# --- feeds ------------------------------------------------------------------------------------


async def conversation_events(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID, after: int, limit: int
) -> list[Sealed]:
    found = await tx.rows(
        "conversation_events", family_id=family_id, conversation_id=conversation_id, after=after, limit=limit
    )
    return [r.sealed(row) for row in r.records(r.EventRow, found)]


async def feed_frontier(tx: Tx, tenant: str, lock_timeout_ms: int) -> int | None:
    """The tenant's greatest final sequence number; None when in-flight writers outlast the timeout."""
    try:
        return await tx.value_or_none("feed_frontier", int, tenant=tenant, lock_timeout=f"{lock_timeout_ms}ms")
    except asyncpg.LockNotAvailableError:
        return None


async def tenant_events(tx: Tx, tenant: str, after: int, frontier: int, limit: int) -> list[Sealed]:
    found = await tx.rows("tenant_events", tenant=tenant, after=after, frontier=frontier, limit=limit)
    return [r.sealed(row) for row in r.records(r.EventRow, found)]


# --- audit and export -------------------------------------------------------------------------


async def audit_batches(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID
) -> AsyncIterator[list[Checked]]:
    """The conversation's events in order with their bodies' digests, a batch at a time (needs a transaction)."""
    query = Q["audit_events"]
    cursor = await tx.conn.cursor(query.sql, *query.args({"family_id": family_id, "conversation_id": conversation_id}))
    while found := await cursor.fetch(BATCH):
        yield [Checked(r.sealed(row), row.body_digest) for row in r.records(r.AuditRow, found)]


async def audit_summary(
    tx: Tx, tenant: str, conversation_id: uuid.UUID
) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
    """The conversation's summary row as stored, and as its whole log folds it (replay's fold)."""
    stored = await tx.row("audit_summary", tenant=tenant, conversation_id=conversation_id)
    folded = await tx.row("conversation_as_of", tenant=tenant, conversation_id=conversation_id, upto=_LAST_SEQ, at=None)
    return stored, folded


_LAST_SEQ = 2**63 - 1  # "after every event"


async def export_page(
    tx: Tx, family_id: uuid.UUID, conversation_id: uuid.UUID, after: int
) -> list[tuple[Sealed, str | None, dict[str, str] | None]]:
    """The conversation's next events after `after`, each with its body where one may be served,
    and the parts out of line that body refers to (by hex digest; None: none)."""
    found = await tx.rows(
        "export_events", family_id=family_id, conversation_id=conversation_id, after=after, limit=BATCH
    )
    return [
        (r.sealed(row, row.digest_key), row.content, None if row.blobs is None else _blobs.decode(row.blobs))
        for row in r.records(r.ExportRow, found)
    ]


_blobs = msgspec.json.Decoder(dict[str, str])


# --- redaction and erasure ----------------------------------------------------------------------


async def find_redaction(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> views.Redaction | None:
    row = r.record(r.RedactionRow, await tx.row("find_redaction", family_id=family_id, message_id=message_id))
    return None if row is None else r.redaction(row.redacted_at, row.redacted_by, row.redaction_reason, row.redaction_erased)


async def find_body(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> str | None:
    return await tx.value_or_none("find_body", str, family_id=family_id, message_id=message_id)


async def erase_body(tx: Tx, family_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Delete the body, and the parts out of line it referred to that no other body of the tenant
    refers to."""
    links = await tx.rows("erase_body", family_id=family_id, message_id=message_id)
    if links:
        tenant = links[0]["tenant"]
        await tx.run("drop_unreferenced_blobs", tenant=tenant, digests=[row["sha256"] for row in links])


async def find_quoting_responses(
    tx: Tx, tenant: str, id_text: bytes, content_text: bytes | None
) -> list[tuple[str, bytes]]:
    found = await tx.rows("find_quoting_responses", tenant=tenant, id_text=id_text, content_text=content_text)
    return [(row["key"], row["response"]) for row in found]


async def replace_response(tx: Tx, tenant: str, key: str, response: bytes) -> None:
    await tx.run("replace_response", tenant=tenant, key=key, response=response)


# --- import -------------------------------------------------------------------------------------


async def fork_base_path(
    tx: Tx, tenant: str, family_id: uuid.UUID, source_id: uuid.UUID, base_id: uuid.UUID
) -> dict[uuid.UUID, int]:
    """The path root→base a fork of `source_id` at `base_id` inherits (empty: the source does not show it)."""
    found = await tx.rows("fork_base", family_id=family_id, base_id=base_id, source_id=source_id, tenant=tenant)
    return {row["message_id"]: row["depth"] for row in found}


async def import_conversation(
    tx: Tx, tenant: str, sealed: list[Sealed], bodies: dict[uuid.UUID, Stored]
) -> bytes:
    """Write imported events (already sealed here) and their bodies, then the conversation's summary
    folded from them; returns the summary's chain head."""
    first = sealed[0].envelope
    try:
        with guarded(
            conversation_id=str(first.conversation_id),
            ConversationIdConflict="A conversation with this id already exists.",
            MessageIdConflict="A message of the export already exists in its fork family.",
        ):
            # Unlike an append's, each imported event keeps its own actor, request and time.
            await tx.run("import_events", **log_arrays(tenant, first.conversation_id, first.family_id, sealed, bodies))
            await tx.store_blobs(tenant, first.family_id, bodies)
            return await tx.value(
                "import_summary",
                bytes,
                tenant=tenant,
                conversation_id=first.conversation_id,
                family_id=first.family_id,
                upto=sealed[-1].envelope.seq,
            )
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        # The checks before the write mirror the database's; this is the backstop for the rest
        # (a text PostgreSQL cannot store, say), refused as the file's fault, never a 500.
        raise InvalidExport(f"The database refused the export: {exc}", reason="refused-by-database") from exc


async def unreadable_payloads(tx: Tx) -> list[asyncpg.Record]:
    """Every event whose payload holds text PostgreSQL cannot (rows: seq, tenant, conversation_id, type)."""
    return await tx.rows("unreadable_payloads")
