"""Replies being generated: each in a task of its own, relayed as it arrives, recorded exactly once.

A reply in flight runs apart from the request that started it, so that whatever happens to the
request (the client leaves, the server cancels it at shutdown) the reply is still recorded: the
text received so far as an `interrupted` reply, or the turn's failure. While it streams, what it
says is checkpointed in batches (`_checkpoint`, at most every `checkpoint_seconds`, under the
reply's lease), and relayed to its client only once checkpointed (or, for the last pieces, once
recorded): the text a client was shown survives even a SIGKILL of this process, since the sweep
records a dead owner's reply from its checkpoints (record.close_expired). Its upstream call runs in
an inner task that `interrupt()` cancels; cancelling it closes the upstream response at once, so
the model stops generating. `Replies` owns them all, renews their leases, closes out the
leases dead processes left, and at shutdown interrupts what is still running and waits for it
to be recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.app.caller import Caller
from service.app.ids import new_id
from service.app.turn import progress, record
from service.app.turn.plan import Lease, Plan
from service.domain import views
from service.domain.errors import (
    ConvtreeError,
    DatabaseBusy,
    ReplyInterrupted,
    ReplyNotRecorded,
    ServiceShuttingDown,
    UpstreamError,
    UpstreamTooLarge,
)
from service.domain.events import Interruption
from service.store import pending
from service.store import progress as checkpoints
from service.store.events import Store
from service.store.pool import is_outage, outage
from service.upstream import Finished, Said, TextDelta, ToolCallDelta

log = logging.getLogger("convtree.turns")

# A reply is cut here, as a plain append's content is capped (finish_reason "length", `truncated`):
# no stream may grow without bound. Its text, reasoning, refusal and tool calls' arguments count.
MAX_REPLY_CHARS = 1_000_000
CLIENT_LEFT = Interruption(kind="client_disconnected", detail="The client disconnected before the reply was complete.")
SHUTDOWN = Interruption(kind="shutdown", detail="The service shut down before the reply was complete.")
DISCARDED = Interruption(kind="discarded", detail="The turn was not recorded, so neither is its reply.")
CANCELLED = Interruption(kind="cancelled", detail="The reply was cancelled before it was complete.")
LEASE_LOST = Interruption(kind="lease_lost", detail="This server no longer held the reply: another closed it out.")
# Recording a finished reply while the database is away: retried with pauses growing to this.
RECORD_PAUSE_MIN = 0.05
RECORD_PAUSE_MAX = 2.0


@dataclass(frozen=True)
class Settled:
    """How a reply in flight ended: the stored reply (if any) and, unless it is complete, why not."""

    reply: views.Message | None
    error: BaseException | None


class ReplyInFlight:
    """One reply in flight. Once its turn is `committed()`, `arrived()` and `deltas()` relay what
    it says as it arrives (when started with `relay`): pieces of text, reasoning and refusal, and
    tool call fragments; `settled` resolves once the outcome is recorded."""

    def __init__(self, plan: Plan, *, relay: bool) -> None:
        self.plan = plan
        self.settled: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        # What was received and not yet relayed; `_arrived` is set whenever there is more of it, or
        # once the relay has ended (`_relay_ended`).
        self._pieces: collections.deque[Said] | None = collections.deque() if relay else None
        self._arrived = asyncio.Event()
        self._relay_ended = False
        self._upstream: asyncio.Task[record.Outcome] | None = None
        self._interruption: Interruption | None = None
        # Whether the turn was committed (see opening.opened): until then the reply may not be
        # recorded, nor anything of the turn relayed. `_decided` is set first, so that a stream
        # waiting for it makes its first write before the reply's record starts (callbacks run in
        # the order they are scheduled).
        self._committed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._decided = asyncio.Event()
        # Checkpoints (when started by Replies): what was received and not checkpointed yet, how
        # many checkpoints were written, and whether they are kept once the reply is recorded.
        self._tracked = False
        self.keep = False
        self._unsaved: list[Said] = []
        self._more = asyncio.Event()  # something unsaved, or the upstream call ended
        self._upstream_ended = asyncio.Event()
        self.chunks = 0
        self._started_at = time.perf_counter()
        self._first_token_at: float | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    def confirm(self) -> None:
        self._decided.set()
        self._committed.set_result(None)

    async def committed(self) -> bool:
        """Wait until the turn that launched this reply is committed (True) or has failed to be
        (False: `settled` then holds why). Nothing of the turn may reach its client before."""
        await self._decided.wait()
        return self._committed.result() is None

    def discard(self, error: BaseException) -> None:
        """The turn was not recorded: stop the model, and record nothing of its reply."""
        self.interrupt(DISCARDED)
        self._decided.set()
        self._committed.set_result(error)

    def interrupt(self, why: Interruption) -> None:
        """Stop the model now (if it is still talking); the text so far is recorded as interrupted."""
        if self._upstream is not None and not self._upstream.done() and self._interruption is None:
            self._interruption = why
            self._upstream.cancel()

    def _end_relay(self) -> None:
        self._relay_ended = True
        self._arrived.set()

    def arrived(self) -> list[Said]:
        """What has arrived and not been relayed yet, taken now without waiting: a stream's
        first write carries it along with the turn's ids (one write, not two, when the model is
        quicker than the turn's commit)."""
        pieces = self._pieces
        assert pieces is not None, "started without relay"
        batch = list(pieces)
        pieces.clear()
        return batch

    async def deltas(self, quiet: float | None = None) -> AsyncIterator[list[Said]]:
        """The rest of the reply in order, in batches: whatever arrived since the last batch was
        taken, so a reader slower than the model takes several pieces per write, not one write per
        piece. After `quiet` seconds without any, an empty batch (a stream's cue for a keep-alive)."""
        pieces = self._pieces
        assert pieces is not None, "started without relay"
        while True:
            if not pieces and not self._relay_ended:
                self._arrived.clear()
                try:
                    async with asyncio.timeout(quiet):
                        await self._arrived.wait()
                except TimeoutError:
                    yield []
                    continue
            if pieces:
                yield self.arrived()
            elif self._relay_ended:
                return

    async def outcome(self, quiet: float | None = None) -> AsyncIterator[Settled | None]:
        """The outcome once it is recorded, preceded by a None every `quiet` seconds until then
        (recording waits out a short database outage; a stream keeps alive meanwhile)."""
        while not self.settled.done():
            await asyncio.wait({self.settled}, timeout=quiet)
            if not self.settled.done():
                yield None
        yield self.settled.result()

    async def _call(self) -> record.Outcome:
        pieces: list[str] = []
        said = record.Assembled()
        size = 0
        finished: Finished | None = None
        cut = False
        error: ConvtreeError | None = None
        interruption: Interruption | None = None
        first_token: float | None = None
        provider = self.plan.provider
        started = self._started_at = time.perf_counter()
        try:
            async with contextlib.aclosing(provider.stream(self.plan.request())) as stream:
                async for item in stream:
                    if isinstance(item, Finished):
                        finished = item
                        continue
                    if not isinstance(item, ToolCallDelta) and not item.text:
                        continue
                    piece, length = _storable(item, MAX_REPLY_CHARS - size)
                    cut = piece is None or length < _length(item)
                    if piece is not None:
                        if first_token is None:
                            first_token = self._first_token_at = time.perf_counter()
                        if isinstance(piece, TextDelta):
                            pieces.append(piece.text)
                        else:
                            said.add(piece)
                        size += length
                        if self._tracked:
                            self._unsaved.append(piece)
                            self._more.set()
                        elif self._pieces is not None:
                            self._pieces.append(piece)
                            self._arrived.set()
                    if cut:
                        break  # closing the stream stops the model
        except asyncio.CancelledError:
            # Our own interrupt(): closing the stream (above, on the way out) stopped the model. If
            # the reply had already ended, the interrupt came too late to cut anything short.
            if finished is None and not cut:
                interruption = self._interruption or SHUTDOWN
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except UpstreamTooLarge:
            cut = True  # a line too large to read: the reply ends before it, as cut
        except ConvtreeError as exc:
            error = exc
        except Exception as exc:  # a provider bug must still end the turn with a recorded failure
            log.exception("provider %s failed unexpectedly", provider.name)
            error = UpstreamError(f"{provider.name} failed: {type(exc).__name__}", provider=provider.name)
        finally:
            if self._tracked:  # the rest is relayed once checkpointed or recorded (Replies._settle)
                self._upstream_ended.set()
                self._more.set()
            else:
                self._end_relay()
        if cut and interruption is None:
            finished = Finished(finish_reason="length")
        ended = time.perf_counter()
        return record.Outcome(
            text="".join(pieces),
            said=said,
            finished=finished,
            error=error,
            interruption=interruption,
            latency_ms=round((ended - started) * 1000, 3),
            first_token_ms=None if first_token is None else round((first_token - started) * 1000, 3),
            truncated=cut and interruption is None,
        )


    def _relay(self, pieces: list[Said]) -> None:
        if self._pieces is not None and pieces:
            self._pieces.extend(pieces)
            self._arrived.set()

    def _release(self) -> None:
        """The reply is recorded (or will never be): relay what was never checkpointed, and end."""
        if self._tracked:
            unsaved, self._unsaved = self._unsaved, []
            self._relay(unsaved)
        self._end_relay()

    def _started(self) -> bytes:
        """The first checkpoint's `started`: the generation as the sweep would record it now."""
        first = self._first_token_at
        outcome = record.Outcome(
            "", None, None, record.OWNER_LOST, round((time.perf_counter() - self._started_at) * 1000, 3),
            None if first is None else round((first - self._started_at) * 1000, 3),
        )  # fmt: skip
        generation = record.generation(self.plan, outcome)
        return progress.encode_started(progress.Started(generation=generation, reply_form=self.plan.reply_form, keep=self.keep))

    def progress_now(self) -> record.Progress:
        return record.Progress(
            chunks=self.chunks, unsaved=list(self._unsaved), keep=self.keep,
            started=self._started() if self.chunks == 0 and self._unsaved else None,
        )  # fmt: skip

    async def _checkpoint(self, store: Store, lease: Lease, every: float) -> None:
        """Write what arrives in batches, at most every `every` seconds (the first at once), and
        relay each batch once it is written. The last pieces are not checkpointed: the record
        writes them (Replies._settle). A batch that cannot be written is kept for the next one
        (and not relayed meanwhile)."""
        if not await self.committed():
            return
        plan = self.plan
        loop = asyncio.get_running_loop()
        last: float | None = None
        warned = False
        while True:
            while not self._unsaved and not self._upstream_ended.is_set():
                self._more.clear()
                await self._more.wait()
            if last is not None and (pause := last + every - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._upstream_ended.wait()
            if self._upstream_ended.is_set():
                return
            batch, self._unsaved = self._unsaved, []
            started = self._started() if self.chunks == 0 else None
            try:
                cancel = await checkpoints.checkpoint(
                    store, plan.family_id, plan.reply_id, lease.owner, lease.seconds,
                    self.chunks, progress.encode(batch), started,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the database may be away: the next batch carries these pieces
                if not warned:
                    log.warning("reply %s: checkpoint failed (%s: %s); retrying", plan.reply_id, type(exc).__name__, exc)
                    warned = True
                self._unsaved[:0] = batch
                last = loop.time()
                continue
            self.chunks += 1
            last = loop.time()
            self._relay(batch)
            if cancel is None:
                self.interrupt(LEASE_LOST)
            elif cancel:
                self.interrupt(CANCELLED)


class Replies:
    """Every reply in flight of one server process (`owner`), with the leases that make them visible."""

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        record_seconds: float = 10.0,
        checkpoint_seconds: float = progress.CHECKPOINT_SECONDS,
    ) -> None:
        self.owner = new_id()
        self._store = store
        self._checkpoint_seconds = checkpoint_seconds
        self.lease = Lease(self.owner, lease_seconds)  # what each reply of this process is registered under
        self._record_seconds = record_seconds
        self._running: dict[ReplyInFlight, asyncio.Task[None]] = {}
        # Outcomes whose client was told they could not be recorded yet, by reply id: recorded
        # once the database is back.
        self._recording: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._closing = False
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def checkpoint_seconds(self) -> float:
        return self._checkpoint_seconds

    @property
    def running(self) -> int:
        """How many replies are being generated now."""
        return len(self._running)

    def ensure_open(self) -> None:
        if self._closing:
            raise ServiceShuttingDown("The service is shutting down: no new turns are taken.")

    def start(self, caller: Caller, plan: Plan, *, relay: bool, keep: bool = False) -> ReplyInFlight:
        """Call the model now; the reply is checkpointed as it streams and recorded once the turn is
        confirmed (opening.opened). `keep`: its checkpoints outlive its record (a background
        response's stream stays resumable)."""
        flight = ReplyInFlight(plan, relay=relay)
        flight._tracked = True
        flight.keep = keep
        flight._upstream = asyncio.create_task(flight._call())
        flight._checkpointer = asyncio.create_task(flight._checkpoint(self._store, self.lease, self._checkpoint_seconds))
        self._running[flight] = asyncio.create_task(self._settle(caller, flight))
        if self._closing:
            flight.interrupt(SHUTDOWN)
        return flight

    async def _settle(self, caller: Caller, flight: ReplyInFlight) -> None:
        upstream = flight._upstream
        assert upstream is not None
        try:
            await asyncio.wait({upstream})
            refused = await flight._committed
            if refused is not None:  # the turn's transaction failed: this settles with its error
                if flight._pieces is not None:
                    flight._pieces.clear()  # never relayed: the turn does not exist
                flight._unsaved.clear()
                flight._end_relay()
                flight.settled.set_result(Settled(None, refused))
                return
            if flight._checkpointer is not None:
                await flight._checkpointer  # ends with the upstream call (or after a write in flight)
            if upstream.cancelled():  # cancelled before it ever ran: nothing was received or relayed
                flight._end_relay()
                outcome = record.Outcome("", None, None, flight._interruption or SHUTDOWN, 0.0, None)
            else:
                outcome = upstream.result()
            plan = flight.plan
            now = flight.progress_now()
            try:
                reply = await self._record(caller, plan, outcome, self._record_seconds, progress_now=now)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # The database is still away: keep the outcome and record it once it is back.
                log.warning("reply %s not recorded yet (%s); kept until the database is back", plan.reply_id, exc)
                self._recording[plan.reply_id] = asyncio.create_task(self._record_later(caller, plan, outcome, now))
                flight.settled.set_result(Settled(None, _not_recorded(plan, exc)))
                return
            error: BaseException | None = None
            if not outcome.complete:
                error = _reported(outcome, plan, reply)
            flight.settled.set_result(Settled(reply, error))
        except Exception as exc:  # a bug: the lease, no longer renewed, runs out and the sweep closes the turn
            log.exception("could not record the outcome of reply %s", flight.plan.reply_id)
            flight.settled.set_result(Settled(None, exc))
        finally:
            flight._release()
            del self._running[flight]

    async def _record(
        self,
        caller: Caller,
        plan: Plan,
        outcome: record.Outcome,
        within: float | None,
        *,
        again: bool = False,
        progress_now: record.Progress | None = None,
    ) -> views.Message | None:
        """Record the outcome, retrying while the database is unreachable, for up to `within`
        seconds (None: for as long as it takes)."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        pause = RECORD_PAUSE_MIN
        while True:
            try:
                return await record.record_outcome(
                    self._store, caller, self.owner, plan, outcome, again=again, progress_now=progress_now
                )
            except Exception as exc:
                if not is_outage(exc) or (deadline is not None and loop.time() + pause > deadline):
                    raise
            again = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECORD_PAUSE_MAX)

    async def _record_later(
        self, caller: Caller, plan: Plan, outcome: record.Outcome, now: record.Progress
    ) -> None:
        """Record, once the database is back, an outcome whose client was told it could not be
        recorded; its lease is renewed meanwhile (this task owns it)."""
        try:
            await self._record(caller, plan, outcome.delayed(), None, again=True, progress_now=now)
            log.warning("reply %s recorded after the database came back", plan.reply_id)
        except Exception:  # the lease is no longer renewed: it runs out and the sweep closes the turn
            log.exception("could not record the outcome of reply %s", plan.reply_id)
        finally:
            del self._recording[plan.reply_id]

    # --- leases and shutdown ------------------------------------------------------------------

    def _live(self) -> list[uuid.UUID]:
        """The replies a task of this process is working on: only their leases are renewed."""
        return [g.plan.reply_id for g in self._running] + list(self._recording)

    def start_maintenance(self, interval: float | None = None) -> None:
        """Close out what dead processes left, at once and then every `interval` seconds (default:
        a quarter of the lease), and keep the leases of this process's live replies fresh as often."""
        self._maintenance = asyncio.create_task(self._maintain(interval or self.lease.seconds / 4))

    async def _maintain(self, interval: float) -> None:
        while True:
            try:
                live = self._live()
                if live:
                    cancelled = await pending.renew(self._store, self.owner, self.lease.seconds, live)
                    for reply_id in cancelled:
                        self.cancel(reply_id)
                closed = await record.close_expired(self._store)
                if closed:
                    log.warning("closed out %d pending replies whose server had stopped", closed)
            except Exception as exc:  # noqa: BLE001 - the database may be away (or not migrated yet): next round
                log.warning(
                    "pending-reply maintenance failed (%s: %s); retrying in %gs", type(exc).__name__, exc, interval
                )
            await asyncio.sleep(interval)

    def cancel(self, reply_id: uuid.UUID) -> bool:
        """Stop the reply `reply_id` if this process generates it (it is recorded `cancelled`)."""
        for flight in self._running:
            if flight.plan.reply_id == reply_id:
                flight.interrupt(CANCELLED)
                return True
        return False

    def drain(self, after: float) -> None:
        """Shutdown has begun: take no new turns; let running replies finish for `after` seconds,
        then interrupt them (each is recorded as it stood, and its stream ends cleanly)."""
        self._closing = True
        asyncio.get_running_loop().call_later(after, self._interrupt_all)

    def _interrupt_all(self) -> None:
        for flight in list(self._running):
            flight.interrupt(SHUTDOWN)

    async def close(self, timeout: float = 5.0) -> None:
        """Interrupt what still runs and wait (up to `timeout`) until it is recorded. A reply still
        waiting for the database after that is given up: its lease runs out, and the sweep closes
        its turn (turn_failed, `abandoned`)."""
        self._closing = True
        self._interrupt_all()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=timeout)
        later = list(self._recording.values())
        if later:
            _, waiting = await asyncio.wait(later, timeout=timeout)
            for task in waiting:
                task.cancel()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance


def _length(item: Said) -> int:
    if isinstance(item, ToolCallDelta):
        return sum(len(v) for v in (item.id, item.name, item.arguments) if v is not None)
    return len(item.text)


def _storable(item: Said, room: int) -> tuple[Said | None, int]:
    """`item` as it is stored (record.storable) and cut to the `room` left under the cap, and its
    length; None when nothing of it is left (a call fragment is kept whole or not at all)."""
    if isinstance(item, ToolCallDelta):
        fields = [None if v is None else record.storable(v) for v in (item.id, item.type, item.name, item.arguments)]
        kept = ToolCallDelta(item.index, *fields)
        length = _length(kept)
        return (kept, length) if length <= room else (None, 0)
    text = record.storable(item.text)[:room]
    if not text:
        return None, 0
    return type(item)(text), len(text)


def _not_recorded(plan: Plan, cause: Exception) -> ReplyNotRecorded:
    """The reply is kept for later: the database was too busy to take it in time, or could not be
    reached; the client is told which."""
    busy = isinstance(outage(cause), DatabaseBusy)
    why = "the database was too busy to take it in time" if busy else "the database cannot be reached"
    return ReplyNotRecorded(
        f"The reply could not be recorded yet: {why}. It is kept, and will be stored (marked interrupted, "
        "with the text shown) as soon as the database takes it; a retry of the turn then finds it.",
        provider=plan.provider.name,
        conversation_id=str(plan.conversation_id),
        user_message_id=str(plan.user_message.id),
        assistant_message_id=str(plan.reply_id),
    )


def _reported(outcome: record.Outcome, plan: Plan, reply: views.Message | None) -> ConvtreeError:
    """The error a caller sees for an incomplete reply, naming the turn and what was kept of it."""
    if outcome.error is not None:
        error = outcome.error
    else:
        assert outcome.interruption is not None
        interruption = outcome.interruption
        error = (ServiceShuttingDown if interruption is SHUTDOWN else ReplyInterrupted)(interruption.detail)
    error.context.update(
        provider=plan.provider.name,
        conversation_id=str(plan.conversation_id),
        user_message_id=str(plan.user_message.id),
        assistant_message_id=str(plan.reply_id),
        stored=reply is not None,  # False: nothing was received, the turn_failed event says why
    )
    return error


async def generate(plan: Plan) -> record.Outcome:
    """The model's whole reply to `plan`, neither relayed nor recorded, cut at MAX_REPLY_CHARS as
    every reply is: for work that records its replies itself (replay runs). Cancelled, it returns
    the outcome as it stood (interrupted) rather than raising."""
    return await ReplyInFlight(plan, relay=False)._call()
