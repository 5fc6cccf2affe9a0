"""Import rules: reading an export, proving its chain, and checking it forms a conversation we can hold.

Nothing here trusts the file: every line is typed, the chain is recomputed before anything else
is looked at, and the tree is checked line by line, so a refusal names the first line at fault.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import get_args

import msgspec

from service.domain import calls
from service.domain.audit import ChainCheck, Checked
from service.domain.errors import DuplicateToolResult, InvalidExport, ToolResultWithoutCall
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    ConversationForked,
    HeadMoved,
    MessageAppended,
    MessageHidden,
    MessageRedacted,
    Role,
    Sealed,
    TurnFailed,
    body_digest,
    chain_hash,
    from_columns,
    said_beside_body,
)
from service.domain.history import EXPORT_VERSION, ExportLine, columns_of, sealed_of
from service.domain.nesting import check_json_depth
from service.domain.stored import Stored, blob_digest, references
from service.domain.text import first_unstorable_in_json

_ROLES = frozenset(get_args(Role))
_FIRST_TYPES = ("conversation_created", "conversation_forked")
_line_decoder = msgspec.json.Decoder(ExportLine)


class ForkPoint(msgspec.Struct, frozen=True):
    """Where an exported fork came from: the importer must already hold that conversation."""

    source_conversation_id: uuid.UUID
    source_message_id: uuid.UUID


class ImportPlan(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    lines: list[ExportLine]
    bodies: dict[uuid.UUID, Stored]  # message -> its body as stored, for every body that still exists
    head_hash: bytes
    fork: ForkPoint | None
    # A fork's references to the path it inherited, in line order: (message, the depth it must have
    # there or None for any, line).
    inherited_refs: list[tuple[uuid.UUID, int | None, int]]


def refuse(line: int | None, reason: str, detail: str, seq: int | None = None) -> InvalidExport:
    where = f"Line {line}: " if line is not None else ""
    return InvalidExport(f"{where}{detail}", line=line, seq=seq, reason=reason)


def parse_export(raw: bytes) -> list[ExportLine]:
    """One event per line; blank lines only at the end (a trailing newline or two)."""
    text_lines = raw.split(b"\n")
    while text_lines and not text_lines[-1].strip():
        text_lines.pop()
    if not raw:
        raise refuse(None, "empty", "The request body is missing: send an export, one JSON event per line.")
    if not text_lines:
        raise refuse(None, "empty", "The export is empty.")
    lines = []
    for number, text in enumerate(text_lines, start=1):
        check_json_depth(text, line=number)
        _refuse_unstorable(number, None, first_unstorable_in_json(text))
        try:
            line = _line_decoder.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise refuse(number, "malformed", f"not an export line: {exc}") from exc
        # The payload is JSON text inside the line, decoded later: held to the same limit.
        check_json_depth(line.payload.encode(), line=number, seq=line.seq)
        if line.v != EXPORT_VERSION:
            raise refuse(number, "unsupported-version", f"export format v{line.v} is not v{EXPORT_VERSION}.")
        inner = first_unstorable_in_json(line.payload)  # the payload is JSON text inside the line
        _refuse_unstorable(number, line.seq, inner and (f"payload.{inner[0]}", inner[1]))
        if line.created_at.utcoffset() != timedelta(0):
            # The database gives every time back in UTC: another offset would change the hashed text.
            raise refuse(number, "malformed", "created_at must be a UTC time.", line.seq)
        lines.append(line)
    return lines


def _refuse_unstorable(number: int, seq: int | None, found: tuple[str, str] | None) -> None:
    """A line with text convtree cannot keep (in its content, actor, request id or payload) is
    refused like any other bad line, even when its chain verifies."""
    if found is not None:
        path, why = found
        raise refuse(number, "unstorable-text", f"{path}: the text holds {why}.", seq)


def plan_import(lines: list[ExportLine]) -> ImportPlan:
    """Verify the chain first (a tampered export is refused at its first bad event), then the tree."""
    conversation_id = lines[0].conversation_id
    check = ChainCheck(conversation_id)
    for number, line in enumerate(lines, start=1):
        try:
            event = sealed_of(line, "", conversation_id)  # tenant and family are not hashed
        except ValueError as exc:
            raise refuse(number, "malformed", str(exc), line.seq) from exc
        digest = None if line.content is None else body_digest(line.content, event.digest_key)
        check.feed([Checked(event, digest)])
        if check.failure is not None:
            break
    failure = check.first_failure()
    if failure is not None:
        raise refuse(failure.position, failure.reason, failure.detail, failure.seq)
    return _check_tree(lines, check.head)


def _check_tree(lines: list[ExportLine], head_hash: bytes) -> ImportPlan:
    first = lines[0]
    if first.type not in _FIRST_TYPES:
        raise refuse(1, "no-creation", "The first event must create the conversation.", first.seq)
    depths: dict[uuid.UUID, int] = {}  # the conversation's own messages
    inherited: list[tuple[uuid.UUID, int | None, int]] = []
    erased: set[uuid.UUID] = set()
    groups: dict[uuid.UUID, calls.Open] = {}  # the tool-call group open at each message
    fork: ForkPoint | None = None
    for number, line in enumerate(lines, start=1):
        try:
            event = from_columns(columns_of(line), line.content or "")
        except (KeyError, msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise refuse(number, "unsupported-event", f"not an event this service can import ({line.type}).", line.seq) from exc
        if line.type in _FIRST_TYPES and number > 1:
            raise refuse(number, "second-creation", "Only the first event may create the conversation.", line.seq)
        if line.type != "message_appended" and (
            line.message_id, line.parent_id, line.role, line.depth, line.body_sha256
        ) != (None, None, None, None, None):
            raise refuse(number, "malformed", "Only a message event has message columns.", line.seq)
        if isinstance(event, ConversationForked):
            fork = ForkPoint(event.source_conversation_id, event.source_message_id)
            inherited.append((event.source_message_id, None, number))
        elif isinstance(event, ConversationCreated):
            pass
        elif isinstance(event, HeadMoved | TurnFailed):
            # The head's new place, or the message a failed turn answered: the conversation's own,
            # or, in a fork, one it inherited.
            named = event.message_id if isinstance(event, HeadMoved) else event.user_message_id
            if named not in depths:
                if fork is None:
                    raise refuse(number, "unknown-message", "The event names a message the export lacks.", line.seq)
                inherited.append((named, None, number))
        elif isinstance(event, MessageHidden):
            if event.message_id not in depths and fork is None:
                raise refuse(number, "unknown-message", "The event names a message the export lacks.", line.seq)
        elif isinstance(event, MessageRedacted):
            if event.message_id not in depths:
                raise refuse(number, "unknown-message", "The redaction names a message the export lacks.", line.seq)
            if event.erase:
                erased.add(event.message_id)
        elif isinstance(event, MessageAppended):
            _check_message(number, line, depths, inherited, fork)
            groups[event.message_id] = _check_answer(number, line, event, groups)
        # Any other event this service models has no bearing on the tree: it is kept as it is.
    bodies = {
        line.message_id: _body(number, line)
        for number, line in enumerate(lines, start=1)
        if line.message_id is not None and line.content is not None and line.message_id not in erased
    }
    return ImportPlan(
        conversation_id=first.conversation_id,
        lines=lines,
        bodies=bodies,
        head_hash=head_hash,
        fork=fork,
        inherited_refs=inherited,
    )


def _body(number: int, line: ExportLine) -> Stored:
    """A line's body as it is to be stored: its text, and the parts out of line it refers to, each
    of which the line must hold, under the digest of its own text (the chain proves the body's
    references, and through them the parts)."""
    assert line.content is not None
    try:
        event = from_columns(columns_of(line), line.content)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise refuse(number, "malformed", f"the body is not a message's: {exc}", line.seq) from exc
    assert isinstance(event, MessageAppended)
    given = {} if line.blobs is msgspec.UNSET else line.blobs
    blobs: dict[bytes, str] = {}
    for digest, payload in given.items():
        if blob_digest(payload).hex() != digest:
            raise refuse(number, "blob-digest-mismatch", f"blobs.{digest} does not hash to its name.", line.seq)
        blobs[bytes.fromhex(digest)] = payload
    referred = set(references(event.content))
    if referred != set(blobs):
        raise refuse(number, "blobs-mismatch", "blobs must be exactly the parts the body refers to.", line.seq)
    return Stored(line.content, said_beside_body(payload=line.payload)["body"] == "json", blobs)


def _check_message(
    number: int,
    line: ExportLine,
    depths: dict[uuid.UUID, int],
    inherited: list[tuple[uuid.UUID, int | None, int]],
    fork: ForkPoint | None,
) -> None:
    assert line.message_id is not None and line.depth is not None
    if line.role not in _ROLES:
        raise refuse(number, "malformed", f"unknown role {line.role!r}.", line.seq)
    if line.message_id in depths or any(line.message_id == ref for ref, _, _ in inherited):
        raise refuse(number, "duplicate-message", "The message id appears twice.", line.seq)
    if line.parent_id is None:
        if fork is not None or depths or line.depth != 0:
            raise refuse(number, "bad-root", "Only a conversation's first message may be a root, at depth 0.", line.seq)
    elif line.parent_id in depths:
        if line.depth != depths[line.parent_id] + 1:
            raise refuse(number, "bad-depth", "The depth does not follow the parent's.", line.seq)
    elif fork is not None and line.depth >= 1:
        # A fork may write under any message of the path it inherited; the importer checks those.
        inherited.append((line.parent_id, line.depth - 1, number))
    else:
        raise refuse(number, "parent-not-found", "The parent message is not in the export.", line.seq)
    depths[line.message_id] = line.depth


def _check_answer(number: int, line: ExportLine, message: MessageAppended, groups: dict[uuid.UUID, calls.Open]) -> calls.Open:
    """A tool message answers a call of the assistant message it follows, as on every append
    (calls.check); the group it leaves open. What cannot be seen is not decided on: the group
    open at a message the fork inherited, or at an assistant message whose body the export does
    not hold (redacted or erased), is UNCHECKED."""
    if line.parent_id is None:
        group: calls.Open = None
    else:
        group = groups.get(line.parent_id, calls.UNCHECKED)
    try:
        calls.check(group, message)
    except (ToolResultWithoutCall, DuplicateToolResult) as exc:
        raise InvalidExport(
            f"Line {number}: {exc.detail}", line=number, seq=line.seq, reason="tool-call", **exc.context
        ) from exc
    if line.content is None and message.role == "assistant":
        return calls.UNCHECKED
    return calls.after(group, message)


def check_inherited(plan: ImportPlan, path: dict[uuid.UUID, int]) -> None:
    """A fork's references must all lie on its source's path root→base (`path`: message -> depth)."""
    for message_id, depth, number in plan.inherited_refs:
        if message_id not in path or (depth is not None and path[message_id] != depth):
            seq = plan.lines[number - 1].seq
            raise refuse(number, "parent-not-found", "The message is not on the path the fork inherited.", seq)


def reseal(plan: ImportPlan, tenant: str, family_id: uuid.UUID, seqs: list[int]) -> list[Sealed]:
    """The plan's events as this database's, numbered `seqs`. The hash does not cover the number,
    tenant or family, so every link comes out as the export recorded it."""
    previous = GENESIS_HASH
    sealed = []
    for line, seq in zip(plan.lines, seqs, strict=True):
        event = sealed_of(line, tenant, family_id)
        envelope = msgspec.structs.replace(event.envelope, seq=seq)
        previous = chain_hash(previous, envelope, event.columns)
        sealed.append(Sealed(envelope, event.columns, previous, event.digest_key))
    return sealed
