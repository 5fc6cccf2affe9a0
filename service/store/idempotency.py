"""Idempotency-Key rows: a keyed request's claim, and what it came to for its retries."""

from __future__ import annotations

import uuid

import asyncpg

from service.store.session import Session


class IdempotencyKeys(Session):
    async def claim_idempotency_key(self, tenant: str, key: str, fingerprint: bytes) -> bool:
        """Claim the key; False if it was claimed before (its row is then the first request's)."""
        return bool(await self.value_or_none("claim_idempotency_key", bool, tenant=tenant, key=key, fingerprint=fingerprint))

    async def find_idempotency_key(self, tenant: str, key: str) -> asyncpg.Record | None:
        """The key's row, locked: fingerprint, status, response, conversation_id, user_message_id, reply_id."""
        return await self.row("find_idempotency_key", tenant=tenant, key=key)

    async def complete_idempotency_key(self, tenant: str, key: str, status: int, response: bytes) -> None:
        await self.run("complete_idempotency_key", tenant=tenant, key=key, status=status, response=response)

    async def launch_idempotency_key(
        self, tenant: str, key: str, conversation_id: uuid.UUID, user_message_id: uuid.UUID, reply_id: uuid.UUID
    ) -> None:
        await self.run(
            "launch_idempotency_key",
            tenant=tenant,
            key=key,
            conversation_id=conversation_id,
            user_message_id=user_message_id,
            reply_id=reply_id,
        )
