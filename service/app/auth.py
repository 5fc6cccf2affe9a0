"""API keys: issuing them, and resolving a presented key to its tenant."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from service.app.caller import Caller
from service.domain.errors import Unauthorized
from service.store.events import Store

KEY_PREFIX = "ct_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one and costs nothing per request.
    return hashlib.sha256(key.encode()).digest()


async def create_key(store: Store, tenant: str, name: str) -> str:
    """Issue a key for `tenant`; the key is returned once and only its hash is stored."""
    key = new_key()
    async with store.transaction() as tx:
        await tx.insert_api_key(key_hash(key), tenant, name)
    return key


class Authenticator:
    """Resolves keys to callers, remembering answers for a few seconds to keep lookups off the hot path."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[bytes, tuple[float, tuple[str, str, bool] | None]] = {}

    async def authenticate(self, store: Store, authorization: str | None, request_id: str | None) -> Caller:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized()
        digest = key_hash(key.strip())
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            async with store.reader() as tx:
                found = await tx.find_api_key(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, found)
        if found is None:
            raise Unauthorized("The API key is not valid.")
        tenant, name, auto_thread = found
        return Caller(tenant=tenant, actor=name, request_id=request_id, auto_thread=auto_thread)
