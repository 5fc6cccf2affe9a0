"""Appending messages (to the head, or as a branch under any message) and moving the head."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.writes import new_digest_key, numbered, seal_on_known
from service.domain import calls, tree, views
from service.domain.errors import ConversationNotFound, ConvtreeError, MessageNotFound, ParentStillGenerating
from service.domain.events import Event, MessageAppended, Sealed
from service.domain.message import Utterance, said
from service.store import pending
from service.store.events import KnownStateWrite, Store, Tx


class NewMessage(Utterance, frozen=True, kw_only=True):
    """A message to append: what it says, and where (its parent, or the head; a head it expects)."""

    id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    expected_head: uuid.UUID | None = None


class Appended(msgspec.Struct, frozen=True):
    message: views.Message
    created: bool  # False: a retry that found the message it had appended


class KnownHead(msgspec.Struct, frozen=True):
    """A conversation as a write by this process left it (an append, or the fork that made it):
    its state, its head, and the tool-call group open at the head (what a tool message appended
    under it must answer)."""

    state: tree.ConversationState
    head: tree.Node
    at: datetime  # the head's time: the next event is stamped no earlier
    group: calls.Open = None
    # False: the group open at the head was not read (a fork's base, an assistant or tool message
    # of its source): a tool message under it goes the locked way, which reads it.
    group_known: bool = True


class KnownHeads:
    """The state each conversation was in after this process last appended to it, so that the next
    append to its head is decided without reading the conversation first (AppendGroup).

    Only ever a guess, never trusted: such an append is written only if, under the conversation's
    lock, its last event is still the one remembered here. Any other write, by this process or
    another (turns, head moves, redactions, other workers), adds an event, so it writes nothing and
    the append is done the locked way. Event numbers are never reused, so a state remembered from
    a transaction that rolled back cannot match either. Oldest entries go first beyond `limit`.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._known: dict[tuple[str, uuid.UUID], KnownHead] = {}

    def get(self, tenant: str, conversation_id: uuid.UUID) -> KnownHead | None:
        return self._known.get((tenant, conversation_id))

    def remember(self, tenant: str, known: KnownHead) -> None:
        key = (tenant, known.state.conversation_id)
        current = self._known.pop(key, None)
        if current is not None and current.state.last_seq > known.state.last_seq:
            known = current  # a later write's state arrived first: keep it
        elif len(self._known) >= self._limit:
            del self._known[next(iter(self._known))]  # the least recently written
        self._known[key] = known

    def forget(self, tenant: str, conversation_id: uuid.UUID) -> None:
        self._known.pop((tenant, conversation_id), None)


class _Base(msgspec.Struct, frozen=True):
    """What a grouped append is decided on: a conversation's state (remembered, or read as last
    committed), the message it goes under, the time of the state's last event, and the tool-call
    group open at that message."""

    state: tree.ConversationState
    parent: tree.Node | None  # None: the conversation's first message
    at: datetime
    group: calls.Open = None


class _Waiting:
    __slots__ = ("caller", "conversation_id", "new", "keyed", "future", "busy", "counted", "read", "base")

    def __init__(
        self,
        caller: Caller,
        conversation_id: uuid.UUID,
        new: NewMessage,
        keyed: idempotency.Keyed | None,
        future: asyncio.Future[Appended | idempotency.Replayed],
    ) -> None:
        self.caller = caller
        self.conversation_id = conversation_id
        self.new = new
        self.keyed = keyed
        self.busy = False  # holds its conversation's turn in the group (AppendGroup._busy)
        self.counted = False  # its key is counted in flight (AppendGroup._keys)
        self.read = False  # its conversation was read for it (AppendGroup._read)
        self.base: _Base | None = None  # what that read found to decide on
        self.future = future

    @property
    def key(self) -> tuple[str, uuid.UUID]:
        return self.caller.tenant, self.conversation_id

    @property
    def idempotency_key(self) -> tuple[str, str] | None:
        return None if self.keyed is None else (self.caller.tenant, self.keyed.key)


class _Plan(msgspec.Struct, frozen=True):
    waiting: _Waiting
    cmd: tree.Append
    events: list[Event]
    write: KnownStateWrite
    group: calls.Open  # open at the new message


class AppendGroup:
    """Appends, in arrival order per conversation, many to a statement where this process knows
    the conversations' states.

    An append to a conversation whose state is remembered (KnownHeads) and that goes to its head
    is decided on that state as its statement is made; appends that arrive while a statement is in
    flight wait for it and then go together in the next one: one round trip and one commit for all,
    whatever their tenants. Each is written only if its conversation is still in the state it was
    decided on; one with an Idempotency-Key, only if the same statement claims its key and stores
    its answer under it (the key of a retry is taken: it writes nothing). An append with no state
    remembered, or under another parent, first reads the conversation as last committed (one
    round trip, no lock: read_append) and then goes in the next statement the same way, decided on
    what it read. Any other append (a tool message without its group known, a client's id already
    there, a decision that fails on the state remembered or read) and any that was not written
    (the state had moved on, a message id was taken, a key used before) is appended under the lock
    in a transaction of its own, where every rule is checked on the stored state, and the state it
    leaves is remembered once it commits.

    One append per conversation is under way at a time in this process: the next waits for it, so
    that it is decided on the state the previous one left, and this process's own appends never
    make each other fall back to the lock.

    A key is never waited for in a grouped statement on this process's account: an append whose
    key is in flight more than once here (queued, in a statement, under the lock) takes the locked
    way, where it waits for the other (and replays or refuses its answer) in a transaction of its
    own. A key held by another process may still make a statement wait, and fail; a statement that
    fails writes nothing, and each of its appends is then made the locked way on its own (_write).
    """

    def __init__(self, store: Store, heads: KnownHeads | None = None) -> None:
        self.heads = heads or KnownHeads()
        self._store = store
        self._queue: list[_Waiting] = []
        self._busy: set[tuple[str, uuid.UUID]] = set()  # conversations with an append under way
        self._keys: dict[tuple[str, str], int] = {}  # Idempotency-Keys in flight: how many appends carry each
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # reads and locked appends under way
        # The loop the group runs on, learnt at its first append: asking for it at every append
        # costs a getpid() system call on Python 3.11 (asyncio.get_running_loop).
        self._loop: asyncio.AbstractEventLoop | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def append(
        self, caller: Caller, conversation_id: uuid.UUID, new: NewMessage, keyed: idempotency.Keyed | None = None
    ) -> Appended | idempotency.Replayed:
        waiting = _Waiting(caller, conversation_id, new, keyed, self._running_loop().create_future())
        key = waiting.idempotency_key
        if key is not None:
            self._keys[key] = self._keys.get(key, 0) + 1
            waiting.counted = True
        self._queue.append(waiting)
        self._wake()
        return await waiting.future

    def _wake(self) -> None:
        if self._writer is None and self._queue:
            # Starts on the loop's next turn, so that every append arriving in this one goes with it.
            self._writer = self._running_loop().create_task(self._write_queued(), name="convtree-append-group")

    async def _write_queued(self) -> None:
        try:
            while True:
                now = datetime.now(UTC)
                plans: list[_Plan] = []
                later: list[_Waiting] = []
                for waiting in self._queue:
                    if waiting.future.done():
                        self._release(waiting)
                        self._uncount(waiting)
                        continue  # its request is gone, and nothing of it was written
                    if not waiting.busy:  # (one back from its read holds its conversation's turn)
                        if waiting.key in self._busy:
                            later.append(waiting)
                            continue
                        self._busy.add(waiting.key)
                        waiting.busy = True
                    try:
                        plan = self._plan(waiting, now)
                    except Exception as exc:  # a bug: this append fails, the others go on
                        self._done(waiting, exc)
                        continue
                    if isinstance(plan, _Reading):
                        self._start(self._read(waiting))
                    elif plan is None:
                        self._append_locked(waiting)
                    else:
                        plans.append(plan)
                self._queue = later
                if not plans:
                    return
                await self._write(plans)
        except BaseException as exc:  # cancelled (shut down): nobody is left waiting for ever
            for waiting in self._queue:
                self._release(waiting)
                self._uncount(waiting)
                _settle(waiting.future, exc)
            self._queue.clear()
            raise
        finally:
            self._writer = None

    def _plan(self, waiting: _Waiting, now: datetime) -> _Plan | _Reading | None:
        """The append's write in the next statement; _READ: its conversation is to be read first;
        None: it goes the locked way."""
        key = waiting.idempotency_key
        if key is not None and self._keys.get(key, 0) > 1:
            # Another append carries its key: a statement would wait for that one's transaction
            # (and hold up the group's other appends), or claim the key twice.
            return None
        new = waiting.new
        base = waiting.base
        if base is None:
            known = self.heads.get(*waiting.key)
            if known is not None and new.parent_message_id in (None, known.head.message_id):
                if new.id is not None and new.id == known.head.message_id:
                    return None  # a retry of the last append: the locked append finds it and answers 200
                if new.role == "tool" and not known.group_known:
                    return None  # a fork's base: the call group open at it was not read (locked: read there)
                base = _Base(known.state, known.head, known.at, known.group)
            elif waiting.read or new.role == "tool":
                return None  # a tool message answers the group open at its parent, not read here
            else:
                return _READ
        cmd = _command(new)
        try:
            # A client's id may be taken elsewhere in the family: the statement then fails on it.
            state = tree.seen(base.state, base.parent)
            events = tree.decide_append(state, cmd, base.parent, None, base.group)
        except ConvtreeError:
            return None  # decided on a state that may be stale: the locked append decides for real
        assert isinstance(events, list)
        # Stamped by this process's clock, never before the state's last event: where the
        # database's clock (which stamps locked appends) runs ahead, a conversation's times still
        # never go back.
        at = max(now, base.at)
        write = seal_on_known(waiting.caller, state, events, at, base.parent)
        if write is None:
            return None
        if waiting.keyed is not None:
            claim = idempotency.claim_numbered(waiting.keyed, _appended_view(events, write.sealed, at, idempotency.SEQ_MARK))
            if claim is None:
                return None
            write = msgspec.structs.replace(write, claim=claim)
        return _Plan(waiting, cmd, events, write, calls.after(base.group, cmd))

    async def _read(self, waiting: _Waiting) -> None:
        """Read the conversation for an append the group cannot decide on what it remembers, and
        queue it again with what was read; it keeps its conversation's turn meanwhile."""
        waiting.read = True
        try:
            waiting.base = await _read_base(self._store, waiting)
        except Exception:
            waiting.base = None  # the locked append meets the same trouble, and reports it
        except BaseException as exc:
            self._done(waiting, exc)
            raise
        if waiting.base is None:
            self._append_locked(waiting)
            return
        self._queue.append(waiting)
        self._wake()

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, plans: list[_Plan]) -> None:
        try:
            async with self._store.reader() as tx:
                seqs = await tx.append_messages_if_unchanged([p.write for p in plans])
        except BaseException as exc:  # e.g. the connection was lost: whether it committed is unknown
            for p in plans:
                self._done(p.waiting, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for p in plans:
            seq = seqs.get(p.waiting.key)
            if seq is None:
                self.heads.forget(*p.waiting.key)
                # Stays under way: another process wrote there (read it once, and go again), or
                # this append cannot be written so (the locked append follows at once, and explains).
                # A keyed one may have missed for its key, taken by a first try: the locked append
                # replays its answer without another read and statement.
                if p.waiting.read or p.waiting.keyed is not None:
                    self._append_locked(p.waiting)
                else:
                    p.waiting.base = None
                    self._start(self._read(p.waiting))
                continue
            sealed, state = numbered(p.write, seq)
            at = sealed.envelope.created_at
            self.heads.remember(
                p.waiting.caller.tenant, _known_after(state, p.events, at, p.group, p.write.path_digest)
            )
            self._done(p.waiting, Appended(_appended_view(p.events, sealed, at), created=True))

    def _append_locked(self, waiting: _Waiting) -> None:
        if waiting.keyed is not None:
            # Its key's transaction waits at the conversation's gate, as every keyed write does,
            # not behind the group's queue: a conversation held elsewhere fails each in the lock
            # timeout, not one after the other.
            self._release(waiting)
        self._start(self._locked_append(waiting))

    async def _locked_append(self, waiting: _Waiting) -> None:
        outcome: Appended | idempotency.Replayed | BaseException
        try:
            outcome, known = await _append_locked_once(self._store, waiting)
            if known is not None:
                self.heads.remember(waiting.caller.tenant, known)  # committed: safe to build on
        except BaseException as exc:
            outcome = exc
            if not isinstance(exc, Exception):
                self._done(waiting, exc)
                raise
        self._done(waiting, outcome)

    def _release(self, waiting: _Waiting) -> None:
        if waiting.busy:
            waiting.busy = False
            self._busy.discard(waiting.key)

    def _uncount(self, waiting: _Waiting) -> None:
        key = waiting.idempotency_key
        if waiting.counted and key is not None:
            waiting.counted = False
            left = self._keys.pop(key) - 1
            if left:
                self._keys[key] = left

    def _done(self, waiting: _Waiting, outcome: Appended | idempotency.Replayed | BaseException) -> None:
        self._release(waiting)
        self._uncount(waiting)
        _settle(waiting.future, outcome)
        self._wake()


class _Reading:
    """_plan's answer for an append whose conversation is to be read first."""


_READ = _Reading()


async def _read_base(store: Store, waiting: _Waiting) -> _Base | None:
    """The conversation as last committed, and the message the append goes under, from one read
    without a lock. None: the append goes the locked way (no such conversation or parent, or a
    message with the client's id already there: a retry, answered from the log)."""
    new = waiting.new
    given = [i for i in (new.parent_message_id, new.id) if i is not None]
    async with store.reader() as tx:
        found = await tx.read_append(
            waiting.caller.tenant, waiting.conversation_id, given, new.parent_message_id is None
        )
    if found is None:
        return None
    state, at, nodes = found
    if new.id is not None and new.id in nodes:
        return None
    parent_ref = new.parent_message_id if new.parent_message_id is not None else state.head_id
    parent = None if parent_ref is None else nodes.get(parent_ref)
    if parent_ref is not None and (parent is None or not parent.visible):
        return None
    return _Base(state, parent, at)


async def _append_locked_once(
    store: Store, waiting: _Waiting
) -> tuple[Appended | idempotency.Replayed, KnownHead | None]:
    """An append under the lock in a transaction of its own, its key (if any) claimed in it."""
    caller, conversation_id, new = waiting.caller, waiting.conversation_id, waiting.new
    if waiting.keyed is None:
        async with store.transaction(waiting.key) as tx:
            return await _append_locked(tx, caller, conversation_id, new)
    done = await idempotency.run(
        store,
        caller,
        waiting.keyed,
        lambda tx: _append_locked(tx, caller, conversation_id, new),
        lambda a: idempotency.creation(a[0].created, a[0].message),
        conversation_id,
    )
    return (done, None) if isinstance(done, idempotency.Replayed) else done


def _settle(
    future: asyncio.Future[Appended | idempotency.Replayed], outcome: Appended | idempotency.Replayed | BaseException
) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def append_message(
    group: AppendGroup,
    caller: Caller,
    conversation_id: uuid.UUID,
    new: NewMessage,
    keyed: idempotency.Keyed | None = None,
) -> Appended | idempotency.Replayed:
    """Append a message, with the appends grouped into shared statements where they can be
    (AppendGroup); with an Idempotency-Key, once per key (the group claims it with the message)."""
    return await group.append(caller, conversation_id, new, keyed)


async def append(tx: Tx, caller: Caller, conversation_id: uuid.UUID, new: NewMessage) -> Appended:
    """Append under the conversation's lock, in the caller's transaction."""
    appended, _ = await _append_locked(tx, caller, conversation_id, new)
    return appended


async def _append_locked(
    tx: Tx, caller: Caller, conversation_id: uuid.UUID, new: NewMessage
) -> tuple[Appended, KnownHead | None]:
    # One round trip: lock the conversation, draw a number, and read the parent (given, or the
    # head) and any message already carrying the client's id.
    given = [i for i in (new.parent_message_id, new.id) if i is not None]
    w = await writes.lock(tx, caller, conversation_id, 1, given, with_head=new.parent_message_id is None)
    state, nodes = w.state, w.nodes
    cmd = _command(new)
    parent_ref = cmd.parent_id if cmd.parent_id is not None else state.head_id
    parent = nodes.get(parent_ref) if parent_ref is not None else None
    if parent is None and cmd.parent_id is not None and await pending.is_pending(tx, state.family_id, cmd.parent_id):
        # Checked only when the parent is missing: the hot path pays nothing for it.
        raise ParentStillGenerating(parent_message_id=str(cmd.parent_id))
    state = w.see(parent)
    existing = nodes.get(cmd.message_id) if new.id else None
    group = await open_group(tx, w.scope, parent) if cmd.role == "tool" and existing is None else None
    decided = tree.decide_append(state, cmd, parent, existing, group)
    if isinstance(decided, tree.AlreadyAppended):
        message = await tx.get_message(tree.scope(state), decided.node.message_id)
        assert message is not None
        return Appended(message, created=False), None
    sealed = await w.write(decided)
    known = _known_after(w.after, decided, w.now, calls.after(group, cmd), w.paths.get(cmd.message_id))
    return Appended(_appended_view(decided, sealed[0], w.now), created=True), known


def _command(new: NewMessage) -> tree.Append:
    return tree.Append(
        **said(new),
        message_id=new.id or new_id(),
        parent_id=new.parent_message_id,
        expected_head=new.expected_head,
        digest_key=new_digest_key(),
    )


async def open_group(tx: Tx, scope: tree.Scope, parent: tree.Node | None) -> calls.Open:
    """The tool-call group open at `parent` (a message the scope sees, or None), read off the end
    of its path: one round trip, asked only for a tool message."""
    if parent is None or not parent.visible or parent.role not in ("assistant", "tool"):
        return None
    return calls.ended_by(await tx.call_group_tail(scope, parent.message_id, calls.MAX_RESULTS + 1))



def _known_after(
    state: tree.ConversationState, events: list[Event], at: datetime, group: calls.Open, path_digest: bytes | None
) -> KnownHead:
    event = events[0]
    assert isinstance(event, MessageAppended)
    head = msgspec.structs.replace(tree.appended_node(event, state.conversation_id), path_digest=path_digest)
    return KnownHead(state, head, at, group)


def _appended_view(events: list[Event], sealed: Sealed, now: datetime, seq: int | None = None) -> views.Message:
    event = events[0]
    assert isinstance(event, MessageAppended)
    return views.message_of(event, sealed.envelope.conversation_id, sealed.envelope.seq if seq is None else seq, now)


async def move_head(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> views.Conversation:
    async with store.transaction((caller.tenant, conversation_id)) as tx:
        w = await writes.lock(tx, caller, conversation_id)
        nodes = await tx.find_nodes(w.scope, [message_id])
        await w.write(tree.decide_move_head(w.state, nodes.get(message_id), message_id))
        found = await tx.get_conversation(caller.tenant, conversation_id)
    assert found is not None
    return found[0]


async def get(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> views.Message:
    async with store.reader() as tx:
        scope = await _scope(tx, caller, conversation_id)
        message = await tx.get_message(scope, message_id)
    if message is None:
        raise MessageNotFound(message_id=str(message_id))
    return message


async def children(
    store: Store, caller: Caller, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> list[views.Message]:
    async with store.reader() as tx:
        scope = await _scope(tx, caller, conversation_id)
        parent = await tx.get_message(scope, message_id)
        if parent is None:
            raise MessageNotFound(message_id=str(message_id))
        return await tx.list_children(scope, parent)


async def _scope(tx: Tx, caller: Caller, conversation_id: uuid.UUID) -> tree.Scope:
    found = await tx.get_scoped(caller.tenant, conversation_id)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    return found[1]
