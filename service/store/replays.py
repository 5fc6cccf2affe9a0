"""Replay runs: the `replay_runs` rows every server process sees, claimed under leases (schema.sql)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.store.events import Store, Tx
from service.store.queries import Q


class RunRow(msgspec.Struct, frozen=True, kw_only=True):
    """A run as stored; `plan` is the app's JSON, which SQL never reads."""

    tenant: str
    run_id: uuid.UUID
    batch_id: uuid.UUID | None
    source_conversation_id: uuid.UUID
    target_conversation_id: uuid.UUID
    anchor_id: uuid.UUID | None
    destination: str  # fork, branches
    plan: bytes
    status: str
    turns_total: int
    turns_done: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    detail: str | None
    actor: str
    request_id: str | None
    created_at: datetime
    updated_at: datetime


class NewRun(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    run_id: uuid.UUID
    batch_id: uuid.UUID | None
    source_conversation_id: uuid.UUID
    target_conversation_id: uuid.UUID
    anchor_id: uuid.UUID | None
    destination: str  # fork, branches
    plan: bytes
    turns_total: int
    actor: str
    request_id: str | None


def _row(r: asyncpg.Record) -> RunRow:
    return RunRow(**dict(r))


async def insert(tx: Tx, run: NewRun) -> RunRow:
    """Queue a new run; returns it as stored."""
    r = await tx.conn.fetchrow(
        Q["insert_replay_run"],
        run.tenant,
        run.run_id,
        run.batch_id,
        run.source_conversation_id,
        run.target_conversation_id,
        run.anchor_id,
        run.destination,
        run.plan,
        run.turns_total,
        run.actor,
        run.request_id,
    )
    fields: dict[str, Any] = msgspec.structs.asdict(run)
    return RunRow(
        **fields,
        status="queued",
        turns_done=0,
        prompt_tokens=0,
        completion_tokens=0,
        error=None,
        detail=None,
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


async def get(tx: Tx, tenant: str, run_id: uuid.UUID) -> RunRow | None:
    r = await tx.conn.fetchrow(Q["get_replay_run"], tenant, run_id)
    return None if r is None else _row(r)


async def of_batch(tx: Tx, tenant: str, batch_id: uuid.UUID) -> list[RunRow]:
    return [_row(r) for r in await tx.conn.fetch(Q["list_batch_replay_runs"], tenant, batch_id)]


async def claim(
    store: Store, owner: uuid.UUID, lease_seconds: float, per_tenant: int
) -> tuple[str, uuid.UUID] | None:
    """Claim the oldest run no live process holds, unless its tenant is at its bound; None: none."""
    async with store.transaction() as tx:
        r = await tx.conn.fetchrow(Q["claim_replay_run"], owner, lease_seconds, per_tenant)
    return None if r is None else (r["tenant"], r["run_id"])


async def renew(store: Store, owner: uuid.UUID, lease_seconds: float, run_ids: list[uuid.UUID]) -> None:
    async with store.reader() as tx:
        await tx.conn.execute(Q["renew_replay_leases"], owner, lease_seconds, run_ids)


async def advance(
    tx: Tx,
    tenant: str,
    run_id: uuid.UUID,
    owner: uuid.UUID,
    turn: int,
    prompt_tokens: int,
    completion_tokens: int,
    lease_seconds: float,
) -> str | None:
    """Count turn `turn` (1-based) as written in `tx`; returns the run's status after it, or None if
    the owner no longer holds the run (cancelled, or claimed elsewhere): then nothing may be written."""
    return await tx.conn.fetchval(
        Q["advance_replay_run"], tenant, run_id, owner, turn, prompt_tokens, completion_tokens, lease_seconds
    )


async def end(
    store: Store, tenant: str, run_id: uuid.UUID, owner: uuid.UUID, status: str, error: str, detail: str
) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(Q["end_replay_run"], tenant, run_id, owner, status, error, detail)


async def release(store: Store, tenant: str, run_id: uuid.UUID, owner: uuid.UUID) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(Q["release_replay_run"], tenant, run_id, owner)


async def cancel(tx: Tx, tenant: str, run_id: uuid.UUID) -> bool:
    """Cancel a run that has not ended; False if it has ended (or does not exist)."""
    return await tx.conn.fetchval(Q["cancel_replay_run"], tenant, run_id) is not None


async def conversations_by_metadata(tx: Tx, tenant: str, metadata_json: str, limit: int) -> list[uuid.UUID]:
    """Conversations whose metadata holds `metadata_json` (a JSON object), oldest first."""
    rows = await tx.conn.fetch(Q["conversations_by_metadata"], tenant, metadata_json, limit)
    return [r["conversation_id"] for r in rows]
