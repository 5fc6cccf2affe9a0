"""Idempotency-Key: a retried request gets the original outcome, and its work is done once.

One claim serves every door (`claimed`). A write done in one transaction (create, append, fork,
redact, import) stores its response with the key in that transaction (`run`). A turn (a turn, a
regeneration, a chat completion, a response) cannot: its reply is written later, by another
transaction; its key records instead the reply it launched (`Launched`), and a retry is answered
from the log (service/app/turn/begin.py, `again`; a response's: service/app/responses/create.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec

from service.app.caller import Caller
from service.domain.errors import IdempotencyKeyReused, InvalidRequest
from service.store.events import KeyClaim, Store, Tx

T = TypeVar("T")

MAX_KEY_LENGTH = 255


class Keyed(msgspec.Struct, frozen=True):
    """A request's Idempotency-Key and the fingerprint of the request that carried it."""

    key: str
    fingerprint: bytes


class Replayed(msgspec.Struct, frozen=True):
    """The stored response of the request that first used the key."""

    status: int
    body: bytes


class Launched(msgspec.Struct, frozen=True):
    """The turn a key began: where it was written, the message it answers, and its reply (the
    latest attempt at it)."""

    conversation_id: uuid.UUID
    user_message_id: uuid.UUID
    reply_id: uuid.UUID


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"\0".join([method.encode(), path.encode(), body])).digest()


class Claim:
    """A request's hold on its Idempotency-Key in the transaction it writes in (with no key, a
    hold on nothing). `found`: None, the request is the key's to carry out, and the claim holds
    until the transaction ends, so a duplicate arriving meanwhile waits for it; otherwise what the
    request that first used the key came to (its row stays locked until the transaction ends, so
    that concurrent retries act on it one at a time). The same key with another request: 422."""

    def __init__(self, tx: Tx, caller: Caller, keyed: Keyed | None, found: Replayed | Launched | None) -> None:
        self.tx = tx
        self.found = found
        self._caller = caller
        self._keyed = keyed

    async def answered(self, status: int, body: bytes) -> None:
        """Record, in the claim's transaction, the response the request is answered with."""
        if self._keyed is not None:
            await self.tx.complete_idempotency_key(self._caller.tenant, self._keyed.key, status, body)

    async def launched(self, turn: Launched) -> None:
        """Record, with the turn (in its transaction), the reply the request launched."""
        if self._keyed is not None:
            await self.tx.launch_idempotency_key(
                self._caller.tenant, self._keyed.key, turn.conversation_id, turn.user_message_id, turn.reply_id
            )


@asynccontextmanager
async def claimed(
    store: Store, caller: Caller, keyed: Keyed | None, conversation: uuid.UUID | None = None
) -> AsyncIterator[Claim]:
    """A transaction with the request's key claimed in it. `conversation`: the existing one the
    request locks, so that this process's writers queue for it without holding a connection."""
    async with store.transaction(None if conversation is None else (caller.tenant, conversation)) as tx:
        yield Claim(tx, caller, keyed, None if keyed is None else await _claim(tx, caller, keyed))


async def _claim(tx: Tx, caller: Caller, keyed: Keyed) -> Replayed | Launched | None:
    if not 0 < len(keyed.key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    if await tx.claim_idempotency_key(caller.tenant, keyed.key, keyed.fingerprint):
        return None
    stored = await tx.find_idempotency_key(caller.tenant, keyed.key)
    assert stored is not None  # the key's row exists: that is why the claim did nothing
    if stored["fingerprint"] != keyed.fingerprint:
        raise IdempotencyKeyReused()
    if stored["status"] is not None:
        return Replayed(stored["status"], stored["response"])
    if stored["reply_id"] is not None:
        return Launched(stored["conversation_id"], stored["user_message_id"], stored["reply_id"])
    # A turn's key claimed before keys recorded their reply: the turn finds its user message by
    # the id derived from the key (derived_id), and goes on from there.
    return None


def derived_id(caller: Caller, keyed: Keyed) -> uuid.UUID:
    """An id the same tenant and key always name: a keyed turn's user message."""
    return uuid.uuid5(_KEY_IDS, f"{caller.tenant}\n{keyed.key}")


_KEY_IDS = uuid.UUID("6f1c8a52-3c1e-4d0e-9a43-7d1f6f0c2b11")


async def run(
    store: Store,
    caller: Caller,
    keyed: Keyed | None,
    operation: Callable[[Tx], Awaitable[T]],
    answer: Callable[[T], tuple[int, Any]],
    conversation: uuid.UUID | None = None,
) -> T | Replayed:
    """Run `operation` in one transaction, recording the response it is answered with (`answer`:
    its status and body) under the key in that same transaction: a crash leaves either both or
    neither. A retry that arrives while the original is in flight waits for it (the key's row is
    locked), then replays its response. `conversation`: the existing one `operation` locks."""
    async with claimed(store, caller, keyed, conversation) as claim:
        if isinstance(claim.found, Replayed):
            return claim.found
        assert claim.found is None, "a key's fingerprint names its route: only turns launch replies"
        result = await operation(claim.tx)
        if keyed is not None:
            status, body = answer(result)
            await claim.answered(status, msgspec.json.encode(body))
        return result


def claim_numbered(keyed: Keyed, answer: Any) -> KeyClaim | None:
    """The claim of `keyed` by the statement that writes a message and draws its event number: the
    201 answer (`answer`, numbered SEQ_MARK) as `run` would store it, split where its number goes.
    None where the mark cannot be told apart (or the key is not one `claimed` would take): that
    append takes its key the locked way."""
    if not 0 < len(keyed.key) <= MAX_KEY_LENGTH:
        return None
    body = msgspec.json.encode(answer)
    mark = b'"seq":%d' % SEQ_MARK
    if body.count(mark) != 1:
        return None
    head, tail = body.split(mark)
    return KeyClaim(keyed.key, keyed.fingerprint, head + b'"seq":', tail)


# The event number an answer is encoded with before its number is drawn: no event has it.
SEQ_MARK = -7_340_919_263_814_529_017


def creation(created: bool, body: Any) -> tuple[int, Any]:
    """The answer to a creating request: 201 with what it made, or 200 with what a retry naming
    the same id found."""
    return (201 if created else 200), body
