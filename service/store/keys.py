"""API keys and the schema's revision: what the service checks before it serves anything."""

from __future__ import annotations

import asyncpg

from service.store.session import Session, affected


class Keys(Session):
    async def find_api_key(self, key_hash: bytes) -> tuple[str, str, bool] | None:
        """The (tenant, name, auto-threading default) of a key that is not revoked."""
        row = await self.row("find_api_key", key_hash=key_hash)
        return None if row is None else (row["tenant"], row["name"], row["auto_thread"])

    async def insert_api_key(self, key_hash: bytes, tenant: str, name: str) -> None:
        await self.run("insert_api_key", key_hash=key_hash, tenant=tenant, name=name)

    async def revoke_api_keys(self, tenant: str, name: str) -> int:
        return affected(await self.run("revoke_api_keys", tenant=tenant, name=name))

    async def set_api_key_auto_thread(self, tenant: str, name: str, auto_thread: bool) -> int:
        return affected(await self.run("set_api_key_auto_thread", tenant=tenant, name=name, auto_thread=auto_thread))

    async def count_api_keys(self) -> int:
        return await self.value("count_api_keys", int)

    async def list_api_keys(self) -> list[asyncpg.Record]:
        """Rows (tenant, name, created_at, revoked_at, auto_thread), oldest first."""
        return await self.rows("list_api_keys")

    async def schema_revision(self) -> str | None:
        """The migration the database is at; None before the first one."""
        if not await self.value("has_schema_revision", bool):
            return None
        return await self.value_or_none("schema_revision", str)

    async def schema_version(self) -> str | None:
        """The migration the database is at; None when it cannot be read (not migrated)."""
        try:
            return await self.value_or_none("schema_version", str)
        except asyncpg.UndefinedTableError:
            return None
