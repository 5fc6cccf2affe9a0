"""Running replay runs: claimed under a lease by one process at a time, one turn per transaction.

Each turn is its model calls (one, or one per step when the model calls tools: tools.py) and then
one transaction that counts the turn on the run (only while this process still holds it: not
cancelled, not claimed elsewhere) and writes the user message, the steps with the tool results
reused, and the new reply under ids derived from the run and the turn (plan.new_ids, step_id,
result_id). A turn is therefore written exactly once, whatever stops the process: a run whose lease
runs out (its process died) or that was released (its process shut down) is claimed again by any
process, which goes on after the last turn written. A turn whose model calls were under way is
asked again from its first step. A turn that stops at a tool call never recorded is written as far
as it went, its last step asking for the calls, and the run ends `stopped` in the same transaction.

A cancelled run stops at its next turn boundary: the reply being generated is not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from service.app import window as windows
from service.app import writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.replay_runs import tools
from service.app.replay_runs.plan import RunPlan, new_ids, result_id, step_id
from service.app.replay_runs.report import plans
from service.app.replay_runs.start import Limits
from service.app.turn import Params, Plan, record, relay
from service.app.turn.plan import context_items, runs_of
from service.domain import tree, views
from service.domain import turns as rules
from service.domain.errors import ConvtreeError
from service.domain.events import Generation
from service.domain.message import ContextItem, Utterance, context_item, said
from service.store import replays
from service.store.events import Store
from service.store.pool import is_outage
from service.upstream import Provider, Registry

log = logging.getLogger("convtree.replays")


@dataclass(frozen=True)
class Ended:
    """A run's path ends before its last turn: its status and why."""

    status: str  # failed, stopped
    error: str
    detail: str


class Released(Exception):
    """The process is shutting down: the run is left for another (or the next) process."""


class Runner:
    """Every replay run this process (`owner`) is running, up to `limits.workers` at once, each of
    its tenant's at most `limits.per_tenant` (counted across processes); claims more as they end."""

    def __init__(self, store: Store, registry: Registry, limits: Limits) -> None:
        self.owner = new_id()
        self._store = store
        self._registry = registry
        self._limits = limits
        self._running: dict[uuid.UUID, tuple[str, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._claim_loop())

    def wake(self) -> None:
        """A run was queued: look for work now rather than at the next poll."""
        self._wake.set()

    async def _claim_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                if self._running:
                    await replays.renew(self._store, self.owner, self._limits.lease_seconds, list(self._running))
                while len(self._running) < self._limits.workers and not self._closing:
                    claimed = await replays.claim(
                        self._store, self.owner, self._limits.lease_seconds, self._limits.per_tenant
                    )
                    if claimed is None:
                        break
                    tenant, run_id = claimed
                    self._running[run_id] = (tenant, asyncio.create_task(self._run(tenant, run_id)))
            except Exception as exc:  # noqa: BLE001 - the database may be away (or not migrated yet): next round
                log.warning("replay runs: claiming failed (%s: %s)", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._limits.poll_seconds, self._limits.lease_seconds / 3)):
                    await self._wake.wait()

    async def _run(self, tenant: str, run_id: uuid.UUID) -> None:
        try:
            ended = await run_turns(self._store, self._registry, self._limits, self.owner, tenant, run_id, self._closed)
            if ended is not None:
                await replays.end(self._store, tenant, run_id, self.owner, ended.status, ended.error, ended.detail)
        except Released:
            await replays.release(self._store, tenant, run_id, self.owner)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_outage(exc):  # the lease runs out and the run is claimed again once the database is back
                log.warning("replay run %s paused: %s", run_id, exc)
            else:
                log.exception("replay run %s failed", run_id)
                with contextlib.suppress(Exception):
                    detail = f"{type(exc).__name__} while replaying; see the server's log."
                    await replays.end(self._store, tenant, run_id, self.owner, "failed", "internal_error", detail)
        finally:
            self._running.pop(run_id, None)
            self._wake.set()

    def _closed(self) -> bool:
        return self._closing

    async def close(self, timeout: float = 5.0) -> None:
        """Stop claiming, interrupt the runs (the model calls under way are dropped, not written) and
        leave each for whichever process claims it next, from its last written turn."""
        self._closing = True
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        held = dict(self._running)
        for _, task in held.values():
            task.cancel()
        if held:
            await asyncio.wait([t for _, t in held.values()], timeout=timeout)
        for run_id, (tenant, _) in held.items():
            with contextlib.suppress(Exception):
                await replays.release(self._store, tenant, run_id, self.owner)


async def run_turns(
    store: Store,
    registry: Registry,
    limits: Limits,
    owner: uuid.UUID,
    tenant: str,
    run_id: uuid.UUID,
    closing: Callable[[], bool] = lambda: False,
) -> Ended | None:
    """Replay the run's turns from the first not yet written; returns how its path ended early, or
    None (finished, stopped, cancelled, or no longer this owner's). Raises Released at shutdown."""
    async with store.reader() as tx:
        row = await replays.get(tx, tenant, run_id)
        if row is None or row.status != "running":
            return None
        plan = plans.decode(row.plan)
        source = await tx.get_scoped(tenant, row.source_conversation_id)
        assert source is not None, "conversations are never removed"
        path = await tx.message_path(source[1], plan.leaf_id)
    place = {m.id: i for i, m in enumerate(path)}
    try:
        provider = registry.get(plan.provider)
    except ConvtreeError as exc:
        return Ended("failed", record.error_kind(exc), exc.detail)
    caller = Caller(tenant=tenant, actor=row.actor, request_id=row.request_id)
    turn = Turn(store, caller, run_id, owner, row.target_conversation_id, plan, provider, limits.lease_seconds, closing)
    for index in range(row.turns_done, row.turns_total):
        at = place.get(plan.turns[index].user_id)
        if at is None or path[at].redacted is not None:
            return Ended("failed", "source_redacted", "A user message of the replayed path was redacted.")
        parent = row.anchor_id if index == 0 else new_ids(run_id, index - 1)[1]
        went = await turn.replay(index, path[at], tools.turn_steps(path, at), parent)
        if isinstance(went, Ended):
            return went
        if not went:
            return None  # stopped (written so), or cancelled, or claimed by another process meanwhile
    return None


@dataclass
class Said:
    """A turn's messages as the run will write them: each with its id and, when a model generated
    it, its generation; and the tokens its model calls took."""

    messages: list[tuple[uuid.UUID, Utterance, Generation | None]]
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, message_id: uuid.UUID, message: Utterance, generation: Generation | None = None) -> ContextItem:
        self.messages.append((message_id, message, generation))
        return context_item(message_id, message)

    def count(self, outcome: record.Outcome) -> None:
        finished = outcome.finished
        self.prompt_tokens += (finished.prompt_tokens if finished else None) or 0
        self.completion_tokens += (finished.completion_tokens if finished else None) or 0


class Turn:
    """One run's turns, as asked and written by this process."""

    def __init__(
        self,
        store: Store,
        caller: Caller,
        run_id: uuid.UUID,
        owner: uuid.UUID,
        target_id: uuid.UUID,
        plan: RunPlan,
        provider: Provider,
        lease_seconds: float,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.caller = caller
        self.run_id = run_id
        self.owner = owner
        self.target_id = target_id
        self.plan = plan
        self.provider = provider
        self.lease_seconds = lease_seconds
        self.closing = closing
        # The new path up to the next turn, as the model is shown it: read from the log once, then
        # grown by each turn this process writes, which saves a read per turn (what others write
        # into the conversation meanwhile goes beside the run's path, not on it).
        self._before: list[ContextItem] | None = None
        self._family_id: uuid.UUID | None = None

    async def replay(
        self, index: int, user: views.PathMessage, steps: list[tools.Step], parent: uuid.UUID | None
    ) -> Ended | bool:
        """Ask turn `index` step by step (tools.py: each answer resolved against the original step
        at its place) and write it, all its messages in one transaction. True: written, go on;
        False: written as stopped, or not written (this process no longer holds the run)."""
        before = await self._context(parent)
        user_id, reply_id = new_ids(self.run_id, index)
        said_ = Said([])
        context = [*before, said_.add(user_id, Utterance(**said(user)))]
        params = tools.offered(self.plan.params, steps)
        ref = self.plan.turns[index]
        for k in itertools.count():
            original = steps[k] if k < len(steps) else None
            asked = await self._ask(user_id, user, parent, len(before), context, params, step_id(self.run_id, index, k))
            if self.closing():
                raise Released()
            if isinstance(asked, Ended):
                return asked
            turn_plan, outcome = asked
            said_.count(outcome)
            reply = outcome.reply()
            resolved = tools.resolve(original, reply)
            if isinstance(resolved, tools.Replied | tools.Diverged):
                replaced = ref.reply_id or (None if original is None else original.message.id)
                said_.add(reply_id, reply, self._generation(turn_plan, outcome, replaced))
                return await self._write(index, parent, said_, None)
            replaced = None if original is None else original.message.id
            context.append(said_.add(turn_plan.reply_id, reply, self._generation(turn_plan, outcome, replaced)))
            if isinstance(resolved, tools.Unrecorded):
                return await self._write(index, parent, said_, Ended("stopped", "unrecorded_tool_call", resolved.detail))
            for j, result in enumerate(resolved.results):
                context.append(said_.add(result_id(self.run_id, index, k, j), result))
        raise AssertionError("unreachable")  # itertools.count() never ends; each step returns or goes on

    async def _context(self, parent: uuid.UUID | None) -> list[ContextItem]:
        if self._before is None:  # the first turn this process asks: the path so far, from the log
            async with self.store.reader() as tx:
                scoped = await tx.get_scoped(self.caller.tenant, self.target_id)
                assert scoped is not None, "conversations are never removed"
                self._family_id = scoped[1].family_id
                self._before = [] if parent is None else context_items(await tx.message_path(scoped[1], parent))
        return self._before

    async def _ask(
        self,
        user_id: uuid.UUID,
        user: views.PathMessage,
        parent: uuid.UUID | None,
        depth: int,
        items: list[ContextItem],
        params: Params,
        message_id: uuid.UUID,
    ) -> tuple[Plan, record.Outcome] | Ended:
        """The new model's answer at one step, shown the new path so far (through the window)."""
        try:
            context = await windows.apply(self.plan.window, items, self.plan.model)
        except ConvtreeError as exc:
            return Ended("failed", record.error_kind(exc), exc.detail)
        asked = views.Message(
            id=user_id,
            conversation_id=self.target_id,
            parent_message_id=parent,
            role="user",
            content=user.content,
            metadata=user.metadata,
            depth=depth,
            seq=0,  # not written yet
            created_at=dt.datetime.now(dt.UTC),
        )
        assert self._family_id is not None
        turn_plan = Plan(
            self.target_id, self._family_id, asked, message_id, self.provider, self.plan.model, context,
            runs_of(items, context), params,
        )
        outcome = await relay.generate(turn_plan)
        if not outcome.complete:
            kind, detail = record.failure_of(outcome)
            return Ended("failed", kind, detail)
        return turn_plan, outcome

    @staticmethod
    def _generation(turn_plan: Plan, outcome: record.Outcome, replaced: uuid.UUID | None) -> Generation:
        return msgspec.structs.replace(
            record.generation(turn_plan, outcome), replay_of=msgspec.UNSET if replaced is None else replaced
        )

    async def _write(self, index: int, parent: uuid.UUID | None, turn: Said, stop: Ended | None) -> bool:
        """Count turn `index` on the run (and end the run, when it `stop`s there) and write it, in
        one transaction; False when it stops, or (nothing written) this process no longer holds the run."""
        tenant = self.caller.tenant
        async with self.store.transaction((tenant, self.target_id)) as tx:
            counted = await replays.advance(
                tx, tenant, self.run_id, self.owner, index + 1, turn.prompt_tokens, turn.completion_tokens,
                self.lease_seconds, None if stop is None else (stop.status, stop.error, stop.detail),
            )  # fmt: skip
            if counted is None:
                return False
            w = await writes.lock(tx, self.caller, self.target_id, len(turn.messages), [] if parent is None else [parent])
            cmds: list[tuple[tree.Append, Generation | None]] = []
            above_id = parent
            for message_id, message, generation in turn.messages:
                cmd = tree.Append(**said(message), message_id=message_id, parent_id=above_id, digest_key=writes.new_digest_key())
                cmds.append((cmd, generation))
                above_id = message_id
            above = None if parent is None else w.nodes.get(parent)
            await w.write(rules.decide_generated_chain(w.see(above), above, cmds))
        if stop is not None:
            return False
        assert self._before is not None
        self._before += [context_item(message_id, message) for message_id, message, _ in turn.messages]
        return True
