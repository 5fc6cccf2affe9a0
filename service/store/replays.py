"""Replay runs: the `replay_runs` rows every server process sees, claimed under leases (schema.sql)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from service.store import rows
from service.store.events import Store, Tx


class RunRow(msgspec.Struct, frozen=True):
    """get_replay_run, list_batch_replay_runs, list_conversation_replay_runs: a run as stored; `plan` is the app's JSON, which SQL never reads."""

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


async def insert(tx: Tx, run: NewRun) -> RunRow:
    """Queue a new run; returns it as stored."""
    fields: dict[str, Any] = msgspec.structs.asdict(run)
    stored = await tx.row("insert_replay_run", **fields)
    assert stored is not None  # INSERT … RETURNING
    return RunRow(
        **fields,
        status="queued",
        turns_done=0,
        prompt_tokens=0,
        completion_tokens=0,
        error=None,
        detail=None,
        created_at=stored["created_at"],
        updated_at=stored["updated_at"],
    )


async def get(tx: Tx, tenant: str, run_id: uuid.UUID) -> RunRow | None:
    return rows.record(RunRow, await tx.row("get_replay_run", tenant=tenant, run_id=run_id))


async def of_batch(tx: Tx, tenant: str, batch_id: uuid.UUID) -> list[RunRow]:
    return rows.records(RunRow, await tx.rows("list_batch_replay_runs", tenant=tenant, batch_id=batch_id))


async def of_conversation(
    tx: Tx, tenant: str, conversation_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[RunRow]:
    """The runs that replay `conversation_id` or wrote into it, newest first, after the cursor `before`."""
    before_at, before_id = before or (None, None)
    found = await tx.rows(
        "list_conversation_replay_runs",
        tenant=tenant,
        conversation_id=conversation_id,
        before_at=before_at,
        before_id=before_id,
        limit=limit,
    )
    return rows.records(RunRow, found)


async def claim(
    store: Store, owner: uuid.UUID, lease_seconds: float, per_tenant: int
) -> tuple[str, uuid.UUID] | None:
    """Claim the oldest run no live process holds, unless its tenant is at its bound; None: none."""
    async with store.transaction() as tx:
        found = await tx.row("claim_replay_run", owner=owner, lease_seconds=lease_seconds, per_tenant=per_tenant)
    return None if found is None else (found["tenant"], found["run_id"])


async def renew(store: Store, owner: uuid.UUID, lease_seconds: float, run_ids: list[uuid.UUID]) -> None:
    async with store.reader() as tx:
        await tx.run("renew_replay_leases", owner=owner, lease_seconds=lease_seconds, run_ids=run_ids)


async def advance(
    tx: Tx,
    tenant: str,
    run_id: uuid.UUID,
    owner: uuid.UUID,
    turn: int,
    prompt_tokens: int,
    completion_tokens: int,
    lease_seconds: float,
    ended: tuple[str, str, str] | None = None,
) -> str | None:
    """Count turn `turn` (1-based) as written in `tx`, and end the run there with `ended` (status,
    error, detail) if given; returns the run's status after it, or None if the owner no longer
    holds the run (cancelled, or claimed elsewhere): then nothing may be written."""
    status_, error, detail = ended or (None, None, None)
    status: str | None = await tx.value_or_none(
        "advance_replay_run",
        str,
        tenant=tenant,
        run_id=run_id,
        owner=owner,
        turn=turn,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        lease_seconds=lease_seconds,
        status=status_,
        error=error,
        detail=detail,
    )
    return status


async def end(
    store: Store, tenant: str, run_id: uuid.UUID, owner: uuid.UUID, status: str, error: str, detail: str
) -> None:
    async with store.transaction() as tx:
        await tx.run(
            "end_replay_run", tenant=tenant, run_id=run_id, owner=owner, status=status, error=error, detail=detail
        )


async def release(store: Store, tenant: str, run_id: uuid.UUID, owner: uuid.UUID) -> None:
    async with store.transaction() as tx:
        await tx.run("release_replay_run", tenant=tenant, run_id=run_id, owner=owner)


async def cancel(tx: Tx, tenant: str, run_id: uuid.UUID) -> bool:
    """Cancel a run that has not ended; False if it has ended (or does not exist)."""
    return await tx.value_or_none("cancel_replay_run", uuid.UUID, tenant=tenant, run_id=run_id) is not None


async def conversations_by_metadata(tx: Tx, tenant: str, metadata_json: str, limit: int) -> list[uuid.UUID]:
    """Conversations whose metadata holds `metadata_json` (a JSON object), oldest first."""
    found = await tx.rows("conversations_by_metadata", tenant=tenant, filter=metadata_json, limit=limit)
    return [row["conversation_id"] for row in found]
