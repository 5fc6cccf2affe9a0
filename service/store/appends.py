"""Writing the log: the first step of every write (locks, event numbers, the state decided on), and
sealed events written with their bodies and the conversation's new summary (the part write_events of
queries.sql)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.domain import views
from service.domain.events import Sealed
from service.domain.stored import Stored
from service.domain.tree import ConversationState, Node, Scope
from service.store import responses
from service.store import rows as r
from service.store.conflicts import guarded
from service.store.session import Session


class KeyClaim(msgspec.Struct, frozen=True):
    """An Idempotency-Key claimed by the statement that writes its message, with the 201 answer
    stored under it: the answer's JSON is `head`, the event number (drawn by that statement), `tail`."""

    key: str
    fingerprint: bytes
    head: bytes
    tail: bytes


class KnownStateWrite(msgspec.Struct, frozen=True):
    """A message to write on a conversation state its writer knew, not one read under a lock
    (Tx.append_messages_if_unchanged)."""

    tenant: str
    known_seq: int  # the conversation's last event, as the writer knew it
    state: ConversationState  # the summary once the message is written (its seq: drawn then)
    sealed: Sealed  # the message's event, chained after the known state's last hash
    content: str  # the body's text (a body with parts out of line is written the locked way)
    claim: KeyClaim | None = None  # written only if this key is claimed with it
    path_digest: bytes | None = None  # the message's path digest (message_paths), if its parent has one


def log_arrays(
    tenant: str,
    conversation_id: uuid.UUID,
    family_id: uuid.UUID,
    sealed: Sequence[Sealed],
    bodies: dict[uuid.UUID, Stored],
    paths: Mapping[uuid.UUID, bytes] | None = None,
) -> dict[str, list[Any]]:
    """Sealed events of one conversation and their bodies as the arrays of queries.sql's part
    write_event_arrays, by parameter name: each event keeps its own actor, request and time, and
    gets this `tenant`, conversation and family; each body gets the digest key its message's event
    was sealed with; each message its path digest from `paths` (none: not indexed)."""
    paths = paths or {}
    keys = {s.columns.message_id: s.digest_key for s in sealed if s.columns.message_id is not None}
    n = len(sealed)
    return {
        "seqs": [s.envelope.seq for s in sealed],
        "tenants": [tenant] * n,
        "conversation_ids": [conversation_id] * n,
        "family_ids": [family_id] * n,
        "types": [s.columns.type for s in sealed],
        "message_ids": [s.columns.message_id for s in sealed],
        "parent_ids": [s.columns.parent_id for s in sealed],
        "roles": [s.columns.role for s in sealed],
        "depths": [s.columns.depth for s in sealed],
        "body_sha256s": [s.columns.body_sha256 for s in sealed],
        "payloads": [s.columns.payload for s in sealed],
        "actors": [s.envelope.actor for s in sealed],
        "request_ids": [s.envelope.request_id for s in sealed],
        "created_ats": [s.envelope.created_at for s in sealed],
        "hashes": [s.hash for s in sealed],
        "path_digests": [None if s.columns.message_id is None else paths.get(s.columns.message_id) for s in sealed],
        "body_family_ids": [family_id] * len(bodies),
        "body_ids": list(bodies),
        "contents": [b.text for b in bodies.values()],
        "digest_keys": [keys.get(m) for m in bodies],
    }


def _created(
    tenant: str,
    state: ConversationState,
    sealed: Sequence[Sealed],
    title: str | None,
    metadata: dict[str, Any],
    forked_from: views.ForkedFrom | None,
) -> dict[str, Any]:
    """A new conversation's summary once `sealed` is written, by the part conversation_row's parameter names."""
    first = sealed[0].envelope
    return {
        "tenant": tenant,
        "conversation_id": state.conversation_id,
        "family_id": state.family_id,
        "title": title,
        "metadata": msgspec.json.encode(metadata).decode(),
        "head_id": state.head_id,
        "message_count": state.message_count,
        "leaf_count": state.leaf_count,
        "created_seq": first.seq,
        "created_at": first.created_at,
        "last_seq": sealed[-1].envelope.seq,
        "last_hash": sealed[-1].hash,
        "forked_from_conversation_id": None if forked_from is None else forked_from.conversation_id,
        "forked_from_message_id": None if forked_from is None else forked_from.message_id,
        "base_depth": state.base_depth,
    }


def _summary(state: ConversationState, sealed: Sequence[Sealed]) -> dict[str, Any]:
    """The conversation's summary once `sealed` is written, by append_events' parameter names."""
    last = sealed[-1]
    return {
        "head_id": state.head_id,
        "message_count": state.message_count,
        "leaf_count": state.leaf_count,
        "updated_at": sealed[0].envelope.created_at,
        "last_seq": last.envelope.seq,
        "last_hash": last.hash,
    }


class Appends(Session):
    async def store_blobs(self, tenant: str, family_id: uuid.UUID, bodies: dict[uuid.UUID, Stored]) -> None:
        """The parts out of line of bodies just written (none: no round trip), each kept once per
        tenant, and which body refers to which."""
        links = [(m, d) for m, b in bodies.items() for d in b.blobs]
        if not links:
            return
        blobs = {d: p for b in bodies.values() for d, p in b.blobs.items()}
        await self.run(
            "store_blobs",
            tenant=tenant,
            family_id=family_id,
            blob_digests=list(blobs),
            blob_datas=list(blobs.values()),
            link_ids=[m for m, _ in links],
            link_digests=[d for _, d in links],
        )

    # --- the first step ---------------------------------------------------------------------

    async def begin_create(self, tenant: str, conversation_id: uuid.UUID, count: int) -> tuple[datetime, list[int]]:
        """Lock a new conversation's id for its creation and draw `count` sequence numbers."""
        row = await self.row("begin_create", tenant=tenant, conversation_id=conversation_id, count=count)
        assert row is not None
        return row["now"], list(row["seqs"])

    async def begin_write(
        self, tenant: str, conversation_id: uuid.UUID, count: int
    ) -> tuple[ConversationState, datetime, list[int]] | None:
        """Lock the conversation for a write and draw `count` sequence numbers for its events."""
        found = await self.row("begin_write", tenant=tenant, conversation_id=conversation_id, count=count)
        row = r.record(r.StateRow, found)
        return None if row is None else (r.state(conversation_id, row), row.now, list(row.seqs))

    async def begin_append(
        self, tenant: str, conversation_id: uuid.UUID, count: int, ids: Sequence[uuid.UUID], with_head: bool
    ) -> tuple[ConversationState, datetime, list[int], dict[uuid.UUID, Node]] | None:
        """`begin_write`, and the messages `ids` (and, `with_head`, the head) as `find_nodes` sees
        them, read under the lock: the whole first step of an append in one round trip."""
        found = await self.rows(
            "begin_append",
            tenant=tenant,
            conversation_id=conversation_id,
            count=count,
            ids=list(ids),
            with_head=with_head,
        )
        rows = r.append_records(found)
        if not rows:
            return None
        first = rows[0].state
        nodes = {row.node.message_id: r.node(row.node) for row in rows if row.node is not None}
        return r.state(conversation_id, first), first.now, list(first.seqs), nodes

    async def read_append(
        self, tenant: str, conversation_id: uuid.UUID, ids: Sequence[uuid.UUID], with_head: bool
    ) -> tuple[ConversationState, datetime, dict[uuid.UUID, Node]] | None:
        """What `begin_append` reads, without its lock, as last committed: the conversation's state,
        the time of its last event, and the messages `ids` (and, `with_head`, the head). None: no
        such conversation."""
        found = await self.rows(
            "read_append", tenant=tenant, conversation_id=conversation_id, ids=list(ids), with_head=with_head
        )
        rows = r.read_records(found)
        if not rows:
            return None
        first = rows[0].state
        nodes = {row.node.message_id: r.node(row.node) for row in rows if row.node is not None}
        return r.state(conversation_id, first), first.updated_at, nodes

    async def find_nodes(self, scope: Scope, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Node]:
        """Messages of the scope's family by id, each saying whether the scope's conversation sees it."""
        found = await self.rows(
            "find_nodes",
            family_id=scope.family_id,
            conversation_id=scope.conversation_id,
            ids=list(ids),
            base_id=scope.base_id,
            base_depth=scope.base_depth,
        )
        return {row.message_id: r.node(row) for row in r.records(r.NodeRow, found)}

    async def find_root(self, family_id: uuid.UUID) -> tuple[uuid.UUID, str, bytes, bytes | None] | None:
        """The family's root message: id, role, body digest and the digest's key (if any)."""
        row = r.record(r.RootRow, await self.row("find_root", family_id=family_id))
        return None if row is None else (row.message_id, row.role, row.body_sha256, row.digest_key)

    # --- writes -----------------------------------------------------------------------------

    async def insert_conversation(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, Stored],
        title: str | None,
        metadata: dict[str, Any],
        forked_from: views.ForkedFrom | None = None,
        paths: Mapping[uuid.UUID, bytes] | None = None,
    ) -> None:
        """Write a new conversation's (or fork's) events, their bodies, its messages' path
        digests and its summary."""
        with guarded(conversation_id=str(state.conversation_id)):
            await self.run(
                "insert_conversation",
                **log_arrays(tenant, state.conversation_id, state.family_id, sealed, bodies, paths),
                **_created(tenant, state, sealed, title, metadata, forked_from),
            )
        await self.store_blobs(tenant, state.family_id, bodies)

    async def create_turn(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, Stored],
        reply: tuple[uuid.UUID, uuid.UUID, str, str],
        owner: uuid.UUID,
        lease_seconds: float,
        paths: Mapping[uuid.UUID, bytes] | None = None,
        response: responses.ResponseRow | None = None,
    ) -> None:
        """`insert_conversation` (untitled, no metadata, no fork) for a turn that creates its
        conversation, its reply (reply id, user message id, provider, model) registered as pending
        and, if the turn is a response, the response's row: in one round trip."""
        reply_id, user_message_id, provider, model = reply
        first = sealed[0].envelope
        with guarded(conversation_id=str(state.conversation_id)):
            await self.run(
                "create_turn",
                **log_arrays(tenant, state.conversation_id, state.family_id, sealed, bodies, paths),
                **_created(tenant, state, sealed, None, {}, None),
                **responses.written_with(response, reply_id, state.family_id, state.conversation_id),
                reply_id=reply_id,
                user_message_id=user_message_id,
                provider=provider,
                model=model,
                actor=first.actor,
                request_id=first.request_id,
                owner=owner,
                lease_seconds=lease_seconds,
            )
        await self.store_blobs(tenant, state.family_id, bodies)

    async def append_events(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, Stored],
        paths: Mapping[uuid.UUID, bytes] | None = None,
    ) -> None:
        """Write events, their bodies, their messages' path digests and the conversation's new
        summary, in the caller's transaction."""
        await self._write_log("append_events", tenant, state, sealed, bodies, paths)

    async def append_turn(
        self,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, Stored],
        reply: tuple[uuid.UUID, uuid.UUID, str, str],
        owner: uuid.UUID,
        lease_seconds: float,
        around: uuid.UUID | None,
        paths: Mapping[uuid.UUID, bytes] | None = None,
        response: responses.ResponseRow | None = None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """`append_events`, the turn's reply (reply id, user message id, provider, model)
        registered as pending and, if the turn is a response, the response's row, in one round
        trip; returns (reply id, user message id) of the replies already pending that are `around`
        or answer it."""
        reply_id, user_message_id, provider, model = reply
        first = sealed[0].envelope
        found = await self._write_log(
            "append_turn",
            tenant,
            state,
            sealed,
            bodies,
            paths,
            **responses.written_with(response, reply_id, state.family_id, state.conversation_id),
            family_id=state.family_id,
            reply_id=reply_id,
            user_message_id=user_message_id,
            provider=provider,
            model=model,
            actor=first.actor,
            request_id=first.request_id,
            owner=owner,
            lease_seconds=lease_seconds,
            around=around,
        )
        return [(row["reply_id"], row["user_message_id"]) for row in found]

    async def _write_log(
        self,
        query: str,
        tenant: str,
        state: ConversationState,
        sealed: list[Sealed],
        bodies: dict[uuid.UUID, Stored],
        paths: Mapping[uuid.UUID, bytes] | None,
        **params: Any,
    ) -> list[asyncpg.Record]:
        """Run `query`, a writer of an existing conversation's log (the part write_events, and the
        summary `state` once `sealed` is written), with its other `params`; then the bodies' parts
        out of line. Its rows, if it returns any."""
        with guarded():
            found = await self.rows(
                query,
                **log_arrays(tenant, state.conversation_id, state.family_id, sealed, bodies, paths),
                **_summary(state, sealed),
                tenant=tenant,
                conversation_id=state.conversation_id,
                **params,
            )
        await self.store_blobs(tenant, state.family_id, bodies)
        return found

    async def append_messages_if_unchanged(self, writes: Sequence[KnownStateWrite]) -> dict[tuple[str, uuid.UUID], int]:
        """Write one message event each to several conversations, with their bodies and new
        summaries, in one statement (outside a transaction: whole appends in one round trip), each
        only if its conversation is still as its writer knew it: the same last event, none stamped
        later. Returns the event numbers drawn (the envelopes' are not used) by (tenant,
        conversation); one missing was not written (its state had moved on, or its key was taken)."""
        # Two messages for one conversation would both pass its check and leave one summary.
        if len({(w.tenant, w.state.conversation_id) for w in writes}) != len(writes):
            raise ValueError("one message per conversation in a statement")
        try:
            found = await self.rows(
                "append_messages_if_unchanged",
                tenants=[w.tenant for w in writes],
                conversation_ids=[w.state.conversation_id for w in writes],
                family_ids=[w.state.family_id for w in writes],
                message_ids=[w.sealed.columns.message_id for w in writes],
                parent_ids=[w.sealed.columns.parent_id for w in writes],
                roles=[w.sealed.columns.role for w in writes],
                depths=[w.sealed.columns.depth for w in writes],
                body_sha256s=[w.sealed.columns.body_sha256 for w in writes],
                payloads=[w.sealed.columns.payload for w in writes],
                actors=[w.sealed.envelope.actor for w in writes],
                request_ids=[w.sealed.envelope.request_id for w in writes],
                created_ats=[w.sealed.envelope.created_at for w in writes],
                hashes=[w.sealed.hash for w in writes],
                contents=[w.content for w in writes],
                message_counts=[w.state.message_count for w in writes],
                leaf_counts=[w.state.leaf_count for w in writes],
                known_seqs=[w.known_seq for w in writes],
                digest_keys=[w.sealed.digest_key for w in writes],
                keys=[None if w.claim is None else w.claim.key for w in writes],
                fingerprints=[None if w.claim is None else w.claim.fingerprint for w in writes],
                response_heads=[None if w.claim is None else w.claim.head for w in writes],
                response_tails=[None if w.claim is None else w.claim.tail for w in writes],
                path_digests=[w.path_digest for w in writes],
            )
        except asyncpg.SyntaxOrAccessError:
            raise  # the statement itself is wrong (a column that is not there): never hidden
        except asyncpg.PostgresError:
            # The statement failed as a whole (a client's message id already taken, a key another
            # transaction holds past the lock timeout, say) and wrote nothing: its writers append the
            # locked way, each on its own, which reads what they need and explains.
            return {}
        return {(row["tenant"], row["conversation_id"]): row["seq"] for row in found}
