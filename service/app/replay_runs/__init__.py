"""Replay runs: a recorded path sent again, turn by turn, to another model, its replies kept in the
same tree beside the originals they replace (plan.py says which turns and where; runner.py how
they run and resume; tools.py the tool rule; report.py what is reported)."""

from __future__ import annotations

import uuid

from service.app import idempotency
from service.app.caller import Caller
from service.app.replay_runs import runs, start
from service.app.replay_runs.plan import Target, TurnRef
from service.app.replay_runs.report import ReplayBatch, ReplayDiff, ReplayRun
from service.app.replay_runs.runner import Runner
from service.app.replay_runs.start import Limits, NewBatch, NewReplay
from service.store.events import Store
from service.upstream import Registry

__all__ = [
    "Limits", "NewBatch", "NewReplay", "ReplayBatch", "ReplayDiff", "ReplayRun", "ReplayRuns", "Target", "TurnRef",
]  # fmt: skip


class ReplayRuns:
    """The replay runs service: built once at start-up, given to the API's controller, and running
    this process's share of the runs until `close()`."""

    def __init__(self, store: Store, registry: Registry, limits: Limits) -> None:
        self._store = store
        self._registry = registry
        self.limits = limits
        self._runner = Runner(store, registry, limits)

    def begin(self) -> None:
        self._runner.start()

    async def close(self) -> None:
        await self._runner.close()

    async def start(
        self, caller: Caller, conversation_id: uuid.UUID, new: NewReplay, keyed: idempotency.Keyed | None
    ) -> ReplayRun | idempotency.Replayed:
        started = await start.start(self._store, self._registry, self.limits, caller, conversation_id, new, keyed)
        self._runner.wake()
        return started

    async def start_batch(
        self, caller: Caller, new: NewBatch, keyed: idempotency.Keyed | None
    ) -> ReplayBatch | idempotency.Replayed:
        started = await start.start_batch(self._store, self._registry, self.limits, caller, new, keyed)
        self._runner.wake()
        return started

    async def get(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> ReplayRun:
        return await runs.get(self._store, caller, conversation_id, run_id)

    async def cancel(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> ReplayRun:
        return await runs.cancel(self._store, caller, conversation_id, run_id)

    async def diff(self, caller: Caller, conversation_id: uuid.UUID, run_id: uuid.UUID) -> ReplayDiff:
        return await runs.diff(self._store, caller, conversation_id, run_id)

    async def batch(self, caller: Caller, batch_id: uuid.UUID) -> ReplayBatch:
        return await runs.batch(self._store, caller, batch_id)


