"""The event store: appends sealed events with their derived rows, and reads conversations back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.domain import views
from service.domain.errors import ConversationIdConflict, MessageIdConflict
from service.domain.events import Sealed, message_metadata, message_payload
from service.domain.tree import ConversationState, Node, Scope, sibling_place
from service.store.pool import Gates, Limits, connection
from service.store.queries import Q

_metadata = msgspec.json.Decoder(dict[str, Any])


class KnownStateWrite(msgspec.Struct, frozen=True):
    """A message to write on a conversation state its writer knew, not one read under a lock
    (Tx.append_messages_if_unchanged)."""

    tenant: str
    known_seq: int  # the conversation's last event, as the writer knew it
    state: ConversationState  # the summary once the message is written (its seq: drawn then)
    sealed: Sealed  # the message's event, chained after the known state's last hash
    content: str


class Store:
    """The pool, and the transactions taken from it, each with bounded waits (store.pool): a
    database that is away or too slow comes out of them as a DatabaseUnavailable or DatabaseBusy."""

    def __init__(self, pool: asyncpg.Pool, limits: Limits | None = None) -> None:
        self.pool = pool
        self.limits = limits or Limits()
        self._gates = Gates()

    @asynccontextmanager
    async def transaction(self, conversation: tuple[str, uuid.UUID] | None = None) -> AsyncIterator[Tx]:
        """A transaction; given the (tenant, id) of the `conversation` it will lock, it takes a
        connection only once no other transaction of this process is waiting for that lock."""
        if conversation is None:
            async with connection(self.pool, self.limits) as conn, conn.transaction():
                yield Tx(conn)
            return
        async with (
            self._gates.hold(conversation, self.limits.lock_timeout),
            connection(self.pool, self.limits) as conn,
            conn.transaction(),
        ):
            yield Tx(conn)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Tx]:
        """A connection for reads that need no transaction of their own."""
        async with connection(self.pool, self.limits) as conn:
            yield Tx(conn)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Tx]:
        """A read-only transaction that sees one consistent state throughout (for audit and export)."""
        async with connection(self.pool, self.limits) as conn, conn.transaction(
            isolation="repeatable_read", readonly=True
        ):
            yield Tx(conn)


class Tx:
    """Queries on one connection (inside a transaction when taken from `Store.transaction`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # --- keys -------------------------------------------------------------------------------

    async def find_api_key(self, key_hash: bytes) -> tuple[str, str] | None:
        row = await self.conn.fetchrow(Q["find_api_key"], key_hash)
        return None if row is None else (row["tenant"], row["name"])

    async def insert_api_key(self, key_hash: bytes, tenant: str, name: str) -> None:
        await self.conn.execute(Q["insert_api_key"], key_hash, tenant, name)

    async def revoke_api_keys(self, tenant: str, name: str) -> int:
        status = await self.conn.execute(Q["revoke_api_keys"], tenant, name)
        return int(status.split()[-1])

    async def count_api_keys(self) -> int:
        return await self.conn.fetchval(Q["count_api_keys"])

    async def list_api_keys(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(Q["list_api_keys"])

    async def schema_revision(self) -> str | None:
        """The migration the database is at; None before the first one."""
        if not await self.conn.fetchval(Q["has_schema_revision"]):
            return None
        return await self.conn.fetchval(Q["schema_revision"])

    # --- writes -----------------------------------------------------------------------------

    async def begin_create(
        self, tenant: str, conversation_id: uuid.UUID, count: int
    ) -> tuple[datetime, list[int]]:
        """Lock a new conversation's id for its creation and draw `count` sequence numbers."""
        row = await self.conn.fetchrow(Q["begin_create"], tenant, conversation_id, count)
        return row["now"], list(row["seqs"])

    async def find_root(self, family_id: uuid.UUID) -> tuple[uuid.UUID, str, bytes, bytes | None] | None:
        """The family's root message: id, role, body digest and the digest's key (if any)."""
        row = await self.conn.fetchrow(Q["find_root"], family_id)
        return None if row is None else (row["message_id"], row["role"], row["body_sha256"], row["digest_key"])

    async def begin_write(
        self, tenant: str, conversation_id: uuid.UUID, count: int
    ) -> tuple[ConversationState, datetime, list[int]] | None:
        """Lock the conversation for a write and draw `count` sequence numbers for its events."""
        row = await self.conn.fetchrow(Q["begin_write"], tenant, conversation_id, count)
        return None if row is None else (_state(conversation_id, row), row["now"], list(row["seqs"]))

    async def begin_append(
        self, tenant: str, conversation_id: uuid.UUID, count: int, ids: Sequence[uuid.UUID], with_head: bool
    ) -> tuple[ConversationState, datetime, list[int], dict[uuid.UUID, Node]] | None:
        """`begin_write`, and the messages `ids` (and, `with_head`, the head) as `find_nodes` sees
        them, read under the lock: the whole first step of an append in one round trip."""
        rows = await self.conn.fetch(Q["begin_append"], tenant, conversation_id, count, list(ids), with_head)
        if not rows:
            return None
        first = rows[0]
        nodes = {
            r["node_id"]: _node(r, "node_") for r in rows if r["node_id"] is not None
        }
        return _state(conversation_id, first), first["now"], list(first["seqs"]), nodes

    async def find_nodes(self, scope: Scope, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Node]:
        """Messages of the scope's family by id, each saying whether the scope's conversation sees it."""
        rows = await self.conn.fetch(
            Q["find_nodes"], scope.family_id, scope.conversation_id, list(ids), scope.base_id, scope.base_depth
        )
        return {r["message_id"]: _node(r) for r in rows}

    async def insert_conversation(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, str],
        title: str | None,
        metadata: dict[str, Any],
        forked_from: views.ForkedFrom | None = None,
    ) -> None:
        first = sealed[0].envelope
        try:
            await self.conn.execute(
                Q["insert_conversation"],
                tenant,
                state.conversation_id,
                state.family_id,
                first.actor,
                first.request_id,
                first.created_at,
                *event_arrays(sealed),
                *body_arrays(bodies, sealed),
                title,
                msgspec.json.encode(metadata).decode(),
                state.head_id,
                state.message_count,
                state.leaf_count,
                first.seq,
                sealed[-1].envelope.seq,
                sealed[-1].hash,
                None if forked_from is None else forked_from.conversation_id,
                None if forked_from is None else forked_from.message_id,
                state.base_depth,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConversationIdConflict(conversation_id=str(state.conversation_id)) from exc

    async def append_events(
        self, tenant: str, state: ConversationState, sealed: list[Sealed], bodies: dict[uuid.UUID, str]
    ) -> None:
        """Write events, their bodies and the conversation's new summary, in the caller's transaction."""
        try:
            await self.conn.execute(Q["append_events"], *_append_arguments(tenant, state, sealed, bodies))
        except asyncpg.UniqueViolationError as exc:
            raise MessageIdConflict() from exc

    async def append_messages_if_unchanged(
        self, writes: Sequence[KnownStateWrite]
    ) -> dict[tuple[str, uuid.UUID], int]:
        """Write one message event each to several conversations, with their bodies and new
        summaries, in one statement (outside a transaction: whole appends in one round trip), each
        only if its conversation is still as its writer knew it: the same last event, none stamped
        later. Returns the event numbers drawn (the envelopes' are not used) by (tenant,
        conversation); one missing was not written."""
        # Two messages for one conversation would both pass its check and leave one summary.
        if len({(w.tenant, w.state.conversation_id) for w in writes}) != len(writes):
            raise ValueError("one message per conversation in a statement")
        columns: tuple[list[Any], ...] = tuple([] for _ in range(18))
        for w in writes:
            e, c = w.sealed.envelope, w.sealed.columns
            row = (
                w.tenant, w.state.conversation_id, w.state.family_id, c.message_id, c.parent_id, c.role,
                c.depth, c.body_sha256, c.payload, e.actor, e.request_id, e.created_at, w.sealed.hash,
                w.content, w.state.message_count, w.state.leaf_count, w.known_seq, w.sealed.digest_key,
            )  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        try:
            rows = await self.conn.fetch(Q["append_messages_if_unchanged"], *columns)
        except asyncpg.PostgresError:
            # The statement failed as a whole (a client's message id already taken, say) and wrote
            # nothing: its writers append the locked way, which reads what they need and explains.
            return {}
        return {(r["tenant"], r["conversation_id"]): r["seq"] for r in rows}

    async def append_turn(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, str],
        reply: tuple[uuid.UUID, uuid.UUID, str, str],
        owner: uuid.UUID,
        lease_seconds: float,
        around: uuid.UUID | None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """`append_events`, and the turn's reply (reply id, user message id, provider, model)
        registered as pending, in one round trip; returns (reply id, user message id) of the
        replies already pending that are `around` or answer it."""
        try:
            rows = await self.conn.fetch(
                Q["append_turn"],
                *_append_arguments(tenant, state, sealed, bodies),
                *reply,
                owner,
                lease_seconds,
                around,
            )
        except asyncpg.UniqueViolationError as exc:
            raise MessageIdConflict() from exc
        return [(r["reply_id"], r["user_message_id"]) for r in rows]

    # --- idempotency ------------------------------------------------------------------------

    async def claim_idempotency_key(self, tenant: str, key: str, fingerprint: bytes) -> bool:
        return bool(await self.conn.fetchval(Q["claim_idempotency_key"], tenant, key, fingerprint))

    async def find_idempotency_key(self, tenant: str, key: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow(Q["find_idempotency_key"], tenant, key)

    async def complete_idempotency_key(self, tenant: str, key: str, status: int, response: bytes) -> None:
        await self.conn.execute(Q["complete_idempotency_key"], tenant, key, status, response)

    async def launch_idempotency_key(
        self, tenant: str, key: str, conversation_id: uuid.UUID, user_message_id: uuid.UUID, reply_id: uuid.UUID
    ) -> None:
        await self.conn.execute(
            Q["launch_idempotency_key"], tenant, key, conversation_id, user_message_id, reply_id
        )

    # --- reads ------------------------------------------------------------------------------

    async def get_conversation(
        self, tenant: str, conversation_id: uuid.UUID
    ) -> tuple[views.Conversation, uuid.UUID] | None:
        """The conversation's summary and its family id."""
        row = await self.conn.fetchrow(Q["get_conversation"], tenant, conversation_id)
        return None if row is None else (_conversation(row), row["family_id"])

    async def get_scoped(
        self, tenant: str, conversation_id: uuid.UUID
    ) -> tuple[views.Conversation, Scope] | None:
        """The conversation's summary, and which messages it shows now (consistently with that summary)."""
        row = await self.conn.fetchrow(Q["get_conversation"], tenant, conversation_id)
        return None if row is None else (_conversation(row), _scope(row))

    async def conversation_as_of(
        self, tenant: str, conversation_id: uuid.UUID, as_of: int | datetime
    ) -> tuple[views.Conversation, Scope] | None:
        """The summary as it stood after event `as_of` (or its newest event stamped at or before that
        instant), folded from the log; None if the conversation did not exist then."""
        seq, at = (None, as_of) if isinstance(as_of, datetime) else (as_of, None)
        row = await self.conn.fetchrow(Q["conversation_as_of"], tenant, conversation_id, seq, at)
        return None if row is None else (_conversation(row), _scope(row))

    async def list_conversations(
        self, tenant: str, before_seq: int | None, limit: int
    ) -> list[tuple[views.Conversation, int]]:
        rows = await self.conn.fetch(Q["list_conversations"], tenant, before_seq, limit)
        return [(_conversation(r), r["created_seq"]) for r in rows]

    async def get_message(self, scope: Scope, message_id: uuid.UUID) -> views.Message | None:
        """A message, if the scope's conversation sees it."""
        row = await self.conn.fetchrow(
            Q["get_message"],
            scope.family_id,
            message_id,
            scope.conversation_id,
            scope.base_id,
            scope.base_depth,
            scope.upto,
        )
        return None if row is None else _message(row)

    async def list_children(self, scope: Scope, parent: views.Message) -> list[views.Message]:
        """The children of a visible message that the scope's conversation sees, oldest first."""
        inherited = parent.conversation_id != scope.conversation_id
        rows = await self.conn.fetch(
            Q["list_children"],
            scope.family_id,
            parent.id,
            scope.conversation_id,
            scope.base_id if inherited else None,
            parent.depth,
            scope.upto,
        )
        return [_message(r) for r in rows]

    async def list_messages(self, scope: Scope) -> list[views.Message]:
        rows = await self.conn.fetch(
            Q["list_messages"], scope.family_id, scope.conversation_id, scope.base_id, scope.upto
        )
        return [_message(r) for r in rows]

    async def list_leaves(self, scope: Scope) -> list[views.Leaf]:
        rows = await self.conn.fetch(
            Q["list_leaves"], scope.family_id, scope.conversation_id, scope.base_id, scope.upto
        )
        return [
            views.Leaf(message_id=r["message_id"], depth=r["depth"], seq=r["seq"], created_at=r["created_at"])
            for r in rows
        ]

    async def message_path(self, scope: Scope, message_id: uuid.UUID) -> list[views.PathMessage]:
        """The root-first path to a message, in one round trip; empty if the scope does not see it."""
        rows = await self.conn.fetch(Q["message_path"], *_path_arguments(scope, message_id))
        # Columns by position (see _path_message): a deep path is thousands of rows.
        path = [r for r in rows if r[15]]
        path.sort(key=_depth)  # root first
        if len(path) == len(rows):  # no parent on the path has a child of the conversation's own off it
            return [_path_message(r, (r[13], r[14])) for r in path]
        others: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
        for r in rows:
            if not r[15]:
                others.setdefault(r[3], {})[r[2]] = r[0]
        conversation_id = scope.conversation_id
        return [
            _path_message(
                r,
                (r[13], r[14])
                if r[3] not in others
                else sibling_place((r[13], r[14]), r[1] == conversation_id, r[2], r[0], others[r[3]]),
            )
            for r in path
        ]

    async def schema_version(self) -> str | None:
        try:
            return await self.conn.fetchval(Q["schema_version"])
        except asyncpg.UndefinedTableError:
            return None


def _path_arguments(scope: Scope, message_id: uuid.UUID) -> tuple[Any, ...]:
    return (scope.family_id, scope.conversation_id, message_id, scope.base_id, scope.base_depth, scope.upto)


def _depth(row: asyncpg.Record) -> int:
    return row[5]


def _path_message(row: asyncpg.Record, place: tuple[int, int]) -> views.PathMessage:
    # message_path's columns by position (a deep path is thousands of rows): seq, conversation_id,
    # message_id, parent_id, role, depth, payload, created_at, content, redacted_at, redacted_by,
    # redaction_reason, redaction_erased, sibling_count, sibling_position, on_path.
    metadata, generation = message_payload(row[6])
    return views.PathMessage(
        id=row[2],
        conversation_id=row[1],
        parent_message_id=row[3],
        role=row[4],
        content=row[8] if row[9] is None else views.REDACTED_CONTENT,
        metadata=metadata,
        generation=generation,
        depth=row[5],
        seq=row[0],
        created_at=row[7],
        redacted=None if row[9] is None else views.Redaction(at=row[9], by=row[10], reason=row[11], erased=row[12]),
        sibling_count=place[0],
        sibling_position=place[1],
    )


def _state(conversation_id: uuid.UUID, row: asyncpg.Record) -> ConversationState:
    return ConversationState(
        conversation_id=conversation_id,
        family_id=row["family_id"],
        head_id=row["head_id"],
        message_count=row["message_count"],
        leaf_count=row["leaf_count"],
        last_seq=row["last_seq"],
        last_hash=row["last_hash"],
        base_id=row["base_id"],
        base_depth=row["base_depth"],
    )


def _node(row: asyncpg.Record, prefix: str = "") -> Node:
    return Node(
        message_id=row[prefix + "id" if prefix else "message_id"],
        conversation_id=row[prefix + "conversation_id"],
        parent_id=row[prefix + "parent_id"],
        role=row[prefix + "role"],
        depth=row[prefix + "depth"],
        body_sha256=row[prefix + "body_sha256"],
        metadata=message_metadata(row[prefix + "payload"]),
        has_children=row[prefix + "has_children"],
        visible=row[prefix + "visible"],
        digest_key=row[prefix + "digest_key"],
    )


def event_arrays(sealed: list[Sealed]) -> tuple[list[Any], ...]:
    """Sealed events as the column arrays the insert queries unnest, in their parameter order."""
    return (
        [s.envelope.seq for s in sealed],
        [s.columns.type for s in sealed],
        [s.columns.message_id for s in sealed],
        [s.columns.parent_id for s in sealed],
        [s.columns.role for s in sealed],
        [s.columns.depth for s in sealed],
        [s.columns.body_sha256 for s in sealed],
        [s.columns.payload for s in sealed],
        [s.hash for s in sealed],
    )


def _append_arguments(
    tenant: str, state: ConversationState, sealed: list[Sealed], bodies: dict[uuid.UUID, str]
) -> tuple[Any, ...]:
    """$1-$23 of append_events, which append_turn shares: the events, their bodies and the
    conversation's new summary."""
    first = sealed[0].envelope
    return (
        tenant,
        state.conversation_id,
        state.family_id,
        first.actor,
        first.request_id,
        first.created_at,
        *event_arrays(sealed),
        *body_arrays(bodies, sealed),
        state.head_id,
        state.message_count,
        state.leaf_count,
        sealed[-1].envelope.seq,
        sealed[-1].hash,
    )


def body_arrays(
    bodies: dict[uuid.UUID, str], sealed: list[Sealed]
) -> tuple[list[uuid.UUID], list[str], list[bytes | None]]:
    """Bodies as the arrays the insert queries unnest: ids, contents and each one's digest key,
    taken from its message's sealed event."""
    keys = {s.columns.message_id: s.digest_key for s in sealed if s.columns.message_id is not None}
    return list(bodies), list(bodies.values()), [keys.get(m) for m in bodies]


def _scope(row: asyncpg.Record) -> Scope:
    return Scope(
        family_id=row["family_id"],
        conversation_id=row["conversation_id"],
        base_id=row["forked_from_message_id"],
        base_depth=row["base_depth"],
        upto=row["last_seq"],
    )


def _conversation(row: asyncpg.Record) -> views.Conversation:
    forked_from = (
        None
        if row["forked_from_conversation_id"] is None
        else views.ForkedFrom(
            conversation_id=row["forked_from_conversation_id"], message_id=row["forked_from_message_id"]
        )
    )
    return views.Conversation(
        id=row["conversation_id"],
        title=row["title"],
        metadata=_metadata.decode(row["metadata"]),
        head_id=row["head_id"],
        message_count=row["message_count"],
        leaf_count=row["leaf_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_seq=row["last_seq"],
        forked_from=forked_from,
    )


def _message_fields(row: asyncpg.Record) -> dict[str, Any]:
    # Every query that serves messages joins message_redaction (queries.sql) and withholds a
    # redacted message's content already; the placeholder and the redaction are filled in here.
    redacted = (
        None
        if row["redacted_at"] is None
        else views.Redaction(
            at=row["redacted_at"],
            by=row["redacted_by"],
            reason=row["redaction_reason"],
            erased=row["redaction_erased"],
        )
    )
    metadata, generation = message_payload(row["payload"])
    return {
        "id": row["message_id"],
        "conversation_id": row["conversation_id"],
        "parent_message_id": row["parent_id"],
        "role": row["role"],
        "content": views.REDACTED_CONTENT if redacted is not None else row["content"],
        "metadata": metadata,
        "generation": generation,
        "depth": row["depth"],
        "seq": row["seq"],
        "created_at": row["created_at"],
        "redacted": redacted,
    }


def _message(row: asyncpg.Record) -> views.Message:
    return views.Message(**_message_fields(row))
