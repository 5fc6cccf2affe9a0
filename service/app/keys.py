"""Managing API keys from the command line: listing, revoking, and the first key of a new database."""

from __future__ import annotations

from datetime import datetime

import msgspec

from service.app.auth import create_key
from service.store.events import Store


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A key as an operator sees it: never the key itself, which only its holder has."""

    tenant: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    auto_thread: bool = False  # the key's default for auto-threading on the OpenAI door


async def list_keys(store: Store) -> list[KeyInfo]:
    async with store.reader() as tx:
        rows = await tx.list_api_keys()
    return [
        KeyInfo(
            tenant=row["tenant"],
            name=row["name"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            auto_thread=row["auto_thread"],
        )
        for row in rows
    ]


async def revoke_keys(store: Store, tenant: str, name: str) -> int:
    """Revoke a tenant's keys of that name; how many were revoked."""
    async with store.transaction() as tx:
        return await tx.revoke_api_keys(tenant, name)


async def set_auto_thread(store: Store, tenant: str, name: str, auto_thread: bool) -> int:
    """Set the auto-threading default of a tenant's keys of that name; how many were set."""
    async with store.transaction() as tx:
        return await tx.set_api_key_auto_thread(tenant, name, auto_thread)


async def ensure_first_key(store: Store, tenant: str, name: str) -> str | None:
    """Create a key when none is valid (a new database), so that it can be used at all; else None."""
    async with store.reader() as tx:
        if await tx.count_api_keys() > 0:
            return None
    return await create_key(store, tenant, name)
