"""The app's services, one per area, built once per process by `open_services` (the API's lifespan)
or `service.app.admin.open_admin` (a command line run), so that their callers hand over a caller and plain values
and never see the store, a pool or a connection.

Each method is a thin door to a use case of its module. What only the app can decide is decided
here: whether an append goes through the grouped writer or the locked transaction, and what a
creating write records under its Idempotency-Key (`stored`) for a retry to replay.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from service.app import audit as audit_app
from service.app import conversation_items, conversations, forks, idempotency, keys, messages, replay, schema, turn
from service.app import transfer, verify
from service.app import context as context_app
from service.app import feed as feed_app
from service.app import redact as redact_app
from service.app import replay_runs
from service.app import responses as responses_app
from service.app.auth import Authenticator, create_key
from service.app.caller import Caller
from service.app.turn import Answered, Chat, Replies, ReplyInFlight, ReplySpec, follow
from service.config import Settings
from service.domain import items, views
from service.domain.audit import AuditReport
from service.domain.history import EventView
from service.domain.redaction import RedactMessage
from service.store import migrate
from service.store.events import Store
from service.store.notify import Listener
from service.store.pool import Limits, open_pool
from service.upstream import Registry, Said, registry_config

Replayed = idempotency.Replayed


def answered(created: bool) -> int:
    """The status a creating write answers with: 201 when it created, 200 when a retry found what
    it had created. A retry by Idempotency-Key replays the same."""
    return 201 if created else 200


class Conversations:
    """Creating, forking and reading conversations: summaries, pages, paths, trees and tips."""

    def __init__(self, store: Store, heads: messages.KnownHeads | None = None) -> None:
        self._store = store
        self._heads = heads  # the appends' (messages.AppendGroup): a new fork's state goes there

    async def create(
        self, caller: Caller, new: conversations.NewConversation, keyed: idempotency.Keyed | None
    ) -> conversations.Created | Replayed:
        return await conversations.create_conversation(self._store, caller, new, keyed)

    async def fork(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        new: forks.NewFork,
        keyed: idempotency.Keyed | None,
    ) -> conversations.Created | Replayed:
        return await forks.fork_conversation(self._store, caller, conversation_id, message_id, new, keyed, self._heads)

    async def list_page(self, caller: Caller, limit: int, cursor: str | None) -> conversations.Page:
        return await conversations.list_page(self._store, caller, limit, cursor)

    async def get(
        self, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
    ) -> views.Conversation:
        return await conversations.get(self._store, caller, conversation_id, as_of)

    async def context(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID | None,
        last: int | None,
        as_of: replay.AsOf | None = None,
    ) -> views.ServedContext:
        return await context_app.context(self._store, caller, conversation_id, message_id, last, as_of)

    async def tree(
        self, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
    ) -> context_app.Tree:
        return await context_app.tree(self._store, caller, conversation_id, as_of)

    async def leaves(
        self, caller: Caller, conversation_id: uuid.UUID, as_of: replay.AsOf | None = None
    ) -> tuple[views.Conversation, list[views.Leaf]]:
        return await context_app.leaves(self._store, caller, conversation_id, as_of)


class Messages:
    """Appending, reading, redacting messages and moving the head."""

    def __init__(self, store: Store, appends: messages.AppendGroup) -> None:
        self._store = store
        self._appends = appends

    async def append(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        new: messages.NewMessage,
        keyed: idempotency.Keyed | None,
    ) -> messages.Appended | Replayed:
        """The app chooses how: see messages.append_message."""
        return await messages.append_message(self._appends, caller, conversation_id, new, keyed)

    async def get(self, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID) -> views.Message:
        return await messages.get(self._store, caller, conversation_id, message_id)

    async def children(
        self, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> list[views.Message]:
        return await messages.children(self._store, caller, conversation_id, message_id)

    async def move_head(
        self, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> views.Conversation:
        return await messages.move_head(self._store, caller, conversation_id, message_id)

    async def redact(
        self, caller: Caller, conversation_id: uuid.UUID, cmd: RedactMessage, keyed: idempotency.Keyed | None
    ) -> redact_app.Redacted | Replayed:
        return await redact_app.redact_message(self._store, caller, conversation_id, cmd, keyed)


class Items:
    """The Conversations API: a conversation as its head path of items (see app.conversation_items)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, caller: Caller, items: list[Any], metadata: dict[str, Any]) -> views.Conversation:
        return await conversation_items.create(self._store, caller, items, metadata)

    async def get(self, caller: Caller, conversation_id: uuid.UUID) -> views.Conversation:
        return await conversation_items.get(self._store, caller, conversation_id)

    async def update(self, caller: Caller, conversation_id: uuid.UUID, metadata: dict[str, Any]) -> views.Conversation:
        return await conversation_items.update(self._store, caller, conversation_id, metadata)

    async def delete(self, caller: Caller, conversation_id: uuid.UUID) -> None:
        await conversation_items.delete(self._store, caller, conversation_id)

    async def list_items(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        after: str | None,
        limit: int,
        order: conversation_items.Order,
    ) -> conversation_items.ItemPage:
        return await conversation_items.list_items(self._store, caller, conversation_id, after, limit, order)

    async def add_items(self, caller: Caller, conversation_id: uuid.UUID, items: list[Any]) -> list[dict[str, Any]]:
        return await conversation_items.add_items(self._store, caller, conversation_id, items)

    async def get_item(self, caller: Caller, conversation_id: uuid.UUID, item_id: str) -> dict[str, Any]:
        return await conversation_items.get_item(self._store, caller, conversation_id, item_id)

    async def delete_item(self, caller: Caller, conversation_id: uuid.UUID, item_id: str) -> views.Conversation:
        return await conversation_items.delete_item(self._store, caller, conversation_id, item_id)


class Events:
    """The log as it is followed: a conversation's events, and the tenant's feed (see app.feed)."""

    def __init__(self, store: Store, following: feed_app.Feed) -> None:
        self._store = store
        self.feed = following

    async def conversation_page(
        self, caller: Caller, conversation_id: uuid.UUID, after: int, limit: int
    ) -> feed_app.Page:
        return await feed_app.conversation_page(self._store, caller, conversation_id, after, limit)

    async def page(self, caller: Caller, after: int, limit: int, wait: float = 0) -> feed_app.Page:
        return await self.feed.page(caller, after, limit, wait)

    def follow(self, caller: Caller, after: int) -> AsyncIterator[list[EventView]]:
        return self.feed.follow(caller, after)

    async def check(self, caller: Caller) -> None:
        """Raise now (Unavailable) if the tenant's feed cannot be read: before a stream begins."""
        await self.feed.frontier(caller.tenant)

    def close(self) -> None:
        self.feed.close()


class Audit:
    """Proving logs unaltered: one conversation, or every conversation of a tenant."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def audit(self, caller: Caller, conversation_id: uuid.UUID) -> AuditReport:
        return await audit_app.audit(self._store, caller, conversation_id)

    async def verify_tenant(
        self,
        caller: Caller,
        *,
        on_start: Callable[[int], None] = lambda total: None,
        on_progress: Callable[[], None] = lambda: None,
    ) -> list[tuple[uuid.UUID, AuditReport]]:
        return await verify.verify_tenant(self._store, caller, on_start=on_start, on_progress=on_progress)


class Transfer:
    """Exporting a conversation's log, and importing one."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def export(self, caller: Caller, conversation_id: uuid.UUID) -> AsyncIterator[bytes]:
        return await transfer.export(self._store, caller, conversation_id)

    async def import_conversation(
        self, caller: Caller, raw: bytes, keyed: idempotency.Keyed | None
    ) -> views.Conversation | Replayed:
        return await transfer.import_conversation(self._store, caller, raw, keyed)

    async def conversations(self, caller: Caller) -> list[uuid.UUID]:
        """The ids of every conversation of the caller's tenant, oldest first (a whole tenant's export)."""
        return await verify.tenant_conversations(self._store, caller)


class Turns:
    """Turns, regenerations and chat completions: the model's replies, generated by this process."""

    def __init__(
        self, store: Store, registry: Registry, generations: Replies, keepalive: float, listener: Listener
    ) -> None:
        self._store = store
        self.registry = registry
        self.generations = generations
        self.keepalive = keepalive  # seconds a stream may stay quiet before a keep-alive
        self.listener = listener  # wakes the followers of a reply (follow.checkpointed)

    async def turn(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        new: turn.NewTurn,
        keyed: idempotency.Keyed | None,
        *,
        relay: bool,
    ) -> ReplyInFlight | Answered:
        generations = self.generations
        generations.ensure_open()
        return await turn.begin_turn(
            self._store, self.registry, caller, generations.lease, conversation_id, new,
            lambda plan: generations.start(caller, plan, relay=relay),
            keyed,
        )  # fmt: skip

    async def regenerate(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        spec: ReplySpec,
        keyed: idempotency.Keyed | None,
        *,
        relay: bool,
    ) -> ReplyInFlight | Answered:
        generations = self.generations
        generations.ensure_open()
        return await turn.begin_regenerate(
            self._store, self.registry, caller, generations.lease, conversation_id, message_id, spec,
            lambda plan: generations.start(caller, plan, relay=relay),
            keyed,
        )  # fmt: skip

    async def chat(
        self, caller: Caller, chat: Chat, keyed: idempotency.Keyed | None, *, relay: bool
    ) -> ReplyInFlight | Answered:
        generations = self.generations
        generations.ensure_open()
        return await turn.begin_chat(
            self._store, self.registry, caller, generations.lease, chat,
            lambda plan: generations.start(caller, plan, relay=relay),
            keyed,
        )  # fmt: skip

    async def locate(self, caller: Caller, conversation_id: uuid.UUID, reply_id: uuid.UUID) -> follow.Located:
        """A turn's reply, from any process: being generated, recorded, or failed."""
        return await follow.locate_reply(self._store, caller, conversation_id, reply_id)

    def follow(self, caller: Caller, located: follow.Located) -> AsyncIterator[list[Said] | follow.Ended]:
        """The reply's text from its first piece (checkpointed, then recorded), then how it ended."""
        return follow.follow_reply(self._store, self.listener, caller, located)

    async def models(self) -> list[tuple[str, str]]:
        return await turn.list_models(self.registry)

    async def model(self, name: str) -> tuple[str, str]:
        """(provider, model) for a model name a turn accepts, if that provider lists it."""
        return await turn.find_model(self.registry, name)

    def drain(self, after: float) -> None:
        self.generations.drain(after)


class Responses:
    """The Responses API: a response is a turn (generated by this process, as Turns' are) with a
    record of its own; reading, listing and deleting it."""

    def __init__(self, store: Store, turns: Turns) -> None:
        self._store = store
        self._turns = turns

    async def create(
        self,
        caller: Caller,
        new: responses_app.NewResponse,
        keyed: idempotency.Keyed | None = None,
        *,
        relay: bool,
        keep: bool = False,
    ) -> responses_app.Begun[ReplyInFlight] | responses_app.Retried:
        """`keep`: a background response's, whose checkpoints outlive its record (its stream can
        be resumed from any process), and whose key's retry is answered at once."""
        generations = self._turns.generations
        generations.ensure_open()
        return await responses_app.begin_response(
            self._store, self._turns.registry, caller, generations.lease, new,
            lambda plan: generations.start(caller, plan, relay=relay, keep=keep),
            keyed, background=keep,
        )  # fmt: skip

    def follow(
        self, caller: Caller, response_id: uuid.UUID, poll: float
    ) -> AsyncIterator[list[Said] | responses_app.Found]:
        return responses_app.follow_response(self._store, self._turns.listener, caller, response_id, poll)

    @property
    def poll(self) -> float:
        """How long a follower of a reply waits for a notification (a checkpoint, its end) before it
        reads anyway."""
        return follow.FALLBACK_SECONDS

    async def cancel(self, caller: Caller, response_id: uuid.UUID, poll: float) -> responses_app.Found:
        generations = self._turns.generations
        return await responses_app.cancel_response(
            self._store, self._turns.listener, caller, response_id, generations.cancel, poll
        )

    async def created(self, caller: Caller, response_id: uuid.UUID) -> responses_app.Found:
        return await responses_app.found_after(self._store, caller, response_id)

    async def get(self, caller: Caller, response_id: uuid.UUID) -> responses_app.Found:
        return await responses_app.get_response(self._store, caller, response_id)

    async def input_items(self, caller: Caller, response_id: uuid.UUID) -> list[views.PathMessage]:
        return await responses_app.input_items(self._store, caller, response_id)

    async def referenced(
        self,
        caller: Caller,
        item_ids: list[str],
        previous_response_id: uuid.UUID | None,
        conversation_id: uuid.UUID | None,
    ) -> dict[str, items.Item]:
        """The items `item_ids` name (item_reference) that the caller's tenant has, by id."""
        return await responses_app.referenced_items(self._store, caller, item_ids, previous_response_id, conversation_id)

    async def delete(self, caller: Caller, response_id: uuid.UUID) -> None:
        await responses_app.delete_response(self._store, caller, response_id)

    @property
    def keepalive(self) -> float:
        return self._turns.keepalive


class Replays:
    """Replay runs: a recorded path sent again to another model, run by this process's Runner (and
    every other process's) as durable work; starting one wakes the Runner."""

    def __init__(
        self, store: Store, registry: Registry, runner: replay_runs.Runner, limits: replay_runs.Limits
    ) -> None:
        self._store = store
        self._registry = registry
        self._runner = runner
        self.limits = limits

    async def start(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        new: replay_runs.NewReplay,
        keyed: idempotency.Keyed | None,
    ) -> replay_runs.ReplayRun | Replayed:
        started = await replay_runs.start(
            self._store, self._registry, self.limits, caller, conversation_id, new, keyed
        )
        self._runner.wake()
        return started

    async def start_batch(
        self, caller: Caller, new: replay_runs.NewBatch, keyed: idempotency.Keyed | None
    ) -> replay_runs.ReplayBatch | Replayed:
        started = await replay_runs.start_batch(self._store, self._registry, self.limits, caller, new, keyed)
        self._runner.wake()
        return started

    async def get(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> replay_runs.ReplayRun:
        return await replay_runs.get(self._store, caller, conversation_id, run_id)

    async def of_conversation(
        self, caller: Caller, conversation_id: uuid.UUID, limit: int, cursor: str | None
    ) -> replay_runs.ReplayRunPage:
        return await replay_runs.of_conversation(self._store, caller, conversation_id, limit, cursor)

    async def cancel(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> replay_runs.ReplayRun:
        return await replay_runs.cancel(self._store, caller, conversation_id, run_id)

    async def diff(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> replay_runs.ReplayDiff:
        return await replay_runs.diff(self._store, caller, conversation_id, run_id)

    async def batch(self, caller: Caller, batch_id: uuid.UUID) -> replay_runs.ReplayBatch:
        return await replay_runs.batch(self._store, caller, batch_id)


class Keys:
    """API keys: resolving a presented key to its caller, and issuing, listing and revoking keys."""

    def __init__(self, store: Store, authenticator: Authenticator | None = None) -> None:
        self._store = store
        self._authenticator = authenticator or Authenticator(0)

    async def authenticate(self, authorization: str | None, request_id: str | None) -> Caller:
        return await self._authenticator.authenticate(self._store, authorization, request_id)

    async def create(self, tenant: str, name: str) -> str:
        return await create_key(self._store, tenant, name)

    async def list_keys(self) -> list[keys.KeyInfo]:
        return await keys.list_keys(self._store)

    async def revoke(self, tenant: str, name: str) -> int:
        return await keys.revoke_keys(self._store, tenant, name)

    async def set_auto_thread(self, tenant: str, name: str, auto_thread: bool) -> int:
        return await keys.set_auto_thread(self._store, tenant, name, auto_thread)

    async def ensure_first(self, tenant: str, name: str) -> str | None:
        return await keys.ensure_first_key(self._store, tenant, name)


class Health:
    """Whether the database answers, and at the schema this version of convtree needs."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.expected = migrate.head_revision()

    async def schema_version(self) -> str | None:
        async with self._store.reader() as tx:
            return await tx.schema_version()

    async def status(self) -> schema.SchemaStatus:
        return await schema.schema_status(self._store)

    async def require_newest(self) -> None:
        await schema.require_newest_schema(self._store)


@dataclass(frozen=True)
class Services:
    """What a serving process's controllers are given: one service per area, sharing one store."""

    store: Store
    keys: Keys
    conversations: Conversations
    messages: Messages
    events: Events
    audit: Audit
    transfer: Transfer
    turns: Turns
    replays: Replays
    health: Health
    responses: Responses
    items: Items

    @property
    def generations(self) -> Replies:
        return self.turns.generations

    @property
    def feed(self) -> feed_app.Feed:
        return self.events.feed


def replay_limits(settings: Settings) -> replay_runs.Limits:
    return replay_runs.Limits(
        max_turns=settings.replay_max_turns,
        per_tenant=settings.replay_runs_per_tenant,
        workers=settings.replay_workers,
        lease_seconds=settings.replay_lease_seconds,
        poll_seconds=settings.replay_poll_seconds,
        batch_max=settings.replay_batch_max,
    )


@asynccontextmanager
async def open_services(
    database_url: str,
    settings: Settings,
    registry: Registry | None = None,
    meter: Callable[[Registry], Registry] | None = None,
) -> AsyncIterator[Services]:
    """The serving process's services, for as long as the block runs: the pool, the feed's
    listening connection, the model providers (`settings.providers` unless `registry` is given,
    which stays its giver's to close; `meter` wraps them), the process's generations and its
    replay runs. They stop in the reverse order: replay runs first, the pool last."""
    limits = Limits(
        connect_timeout=settings.database_connect_timeout,
        acquire_timeout=settings.pool_acquire_timeout,
        lock_timeout=settings.lock_timeout,
        statement_timeout=settings.statement_timeout,
        idle_in_transaction_timeout=settings.idle_in_transaction_timeout,
    )
    async with AsyncExitStack() as stack:
        pool = await open_pool(database_url, limits, min_size=settings.pool_min_size, max_size=settings.pool_max_size)
        stack.push_async_callback(pool.close)
        store = Store(pool, limits)

        listener = Listener(database_url, settings.database_connect_timeout)
        await listener.start()
        stack.push_async_callback(listener.stop)

        providers = Registry.from_config(registry_config(settings.providers)) if registry is None else registry
        if registry is None:
            stack.push_async_callback(providers.aclose)
        if meter is not None:
            providers = meter(providers)
        generations = Replies(
            store,
            lease_seconds=settings.reply_lease_seconds,
            record_seconds=settings.reply_record_seconds,
            checkpoint_seconds=settings.reply_checkpoint_seconds,
        )
        generations.start_maintenance()
        listener.on_cancel(generations.cancel)  # a cancel asked on any process reaches the owner at once
        stack.push_async_callback(generations.close)
        replaying = replay_limits(settings)
        runner = replay_runs.Runner(store, providers, replaying)
        runner.start()
        stack.push_async_callback(runner.close)

        turns = Turns(store, providers, generations, settings.sse_keepalive_seconds, listener)
        appends = messages.AppendGroup(store)
        yield Services(
            store=store,
            keys=Keys(store, Authenticator(settings.key_cache_seconds)),
            conversations=Conversations(store, appends.heads),
            messages=Messages(store, appends),
            events=Events(store, feed_app.Feed(store, listener)),
            audit=Audit(store),
            transfer=Transfer(store),
            turns=turns,
            replays=Replays(store, providers, runner, replaying),
            health=Health(store),
            responses=Responses(store, turns),
            items=Items(store),
        )
