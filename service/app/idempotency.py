"""Idempotency-Key: a retried request gets the original response, and its work is done once."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from service.app.caller import Caller
from service.domain.errors import IdempotencyKeyReused, InvalidRequest
from service.store.events import Store, Tx

T = TypeVar("T")

MAX_KEY_LENGTH = 255


class Replayed(msgspec.Struct, frozen=True):
    """The stored response of the request that first used the key."""

    status: int
    body: bytes


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"\0".join([method.encode(), path.encode(), body])).digest()


async def run(
    store: Store,
    caller: Caller,
    key: str | None,
    request_fingerprint: bytes,  # used only with a key
    operation: Callable[[Tx], Awaitable[T]],
    encode: Callable[[T], tuple[int, bytes]],
    without_key: Callable[[], Awaitable[T]] | None = None,
    conversation: uuid.UUID | None = None,
) -> T | Replayed:
    """Run `operation` in one transaction, recording its response under `key` in that same
    transaction: a crash leaves either both or neither. A retry that arrives while the original
    is in flight waits for it (the key's row is locked), then replays its response. With no key,
    `without_key`, if given, does the write its own way (nothing is recorded then). `conversation`:
    the one `operation` locks, so that this process's writers queue for it without a connection."""
    if key is None and without_key is not None:
        return await without_key()
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    async with store.transaction(None if conversation is None else (caller.tenant, conversation)) as tx:
        if key is not None and not await tx.claim_idempotency_key(caller.tenant, key, request_fingerprint):
            stored = await tx.find_idempotency_key(caller.tenant, key)
            assert stored is not None  # the key's row exists: that is why the claim did nothing
            if stored["fingerprint"] != request_fingerprint:
                raise IdempotencyKeyReused()
            return Replayed(stored["status"], stored["response"])
        result = await operation(tx)
        if key is not None:
            status, body = encode(result)
            await tx.complete_idempotency_key(caller.tenant, key, status, body)
        return result
