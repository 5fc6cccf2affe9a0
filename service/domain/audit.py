"""Audit: re-deriving a conversation's hash chain and body digests to prove its log is unaltered.

Fed in order, one batch at a time, so a conversation of any length is verified in constant memory
(besides the ids of bodiless and redacted messages). Pure: the caller reads the rows; this only judges them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from service.domain.events import (
    GENESIS_HASH,
    Columns,
    MessageRedacted,
    Sealed,
    chain_hash,
    from_columns,
)


class Reason:
    """Stable codes for why a chain does not verify."""

    HASH_MISMATCH = "hash-mismatch"  # this event, or the link to the one before it, was altered or removed
    BODY_MISMATCH = "body-mismatch"  # the message's body does not match the digest its event recorded
    BODY_MISSING = "body-missing"  # the body is gone but no redaction accounts for it
    HEAD_MISMATCH = "head-mismatch"  # the conversation's summary names another chain head
    SUMMARY_MISMATCH = "summary-mismatch"  # the summary differs from its log's fold (head, title, counts…)
    CONVERSATION_MISMATCH = "conversation-mismatch"  # an event of another conversation in the chain


class AuditReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    valid: bool
    events_checked: int
    head_hash: str | None  # hex: the last link that verifies; when `valid`, the conversation's head
    bodies_checked: int  # bodies that exist and were compared with their digests
    bodies_erased: int  # bodies gone by a redaction (erased, or never received by an import)
    first_invalid_seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    fields: list[str] | None = None  # with head-mismatch or summary-mismatch: the summary's columns that differ


# The columns of a conversation's summary row, each of which its log determines (fold_conversations).
SUMMARY_FIELDS = (
    "family_id", "title", "metadata", "head_id", "message_count", "leaf_count", "created_seq",
    "created_at", "updated_at", "last_seq", "last_hash",
    "forked_from_conversation_id", "forked_from_message_id", "base_depth",
)  # fmt: skip


def summary_differences(stored: Mapping[str, Any], folded: Mapping[str, Any] | None) -> list[str]:
    """The summary columns whose stored value is not the one folded from the log (None: the log
    folds to no conversation at all). Metadata is compared as JSON values, not as text."""
    if folded is None:
        return list(SUMMARY_FIELDS)
    return [f for f in SUMMARY_FIELDS if not _same(f, stored[f], folded[f])]


def _same(field: str, stored: Any, folded: Any) -> bool:
    if field == "metadata" and isinstance(stored, str) and isinstance(folded, str):
        try:
            return bool(msgspec.json.decode(stored) == msgspec.json.decode(folded))
        except msgspec.DecodeError:
            return stored == folded
    return bool(stored == folded)


class Checked(msgspec.Struct, frozen=True):
    """One event, and the SHA-256 of its message's body as stored now (None: there is no body)."""

    event: Sealed
    body_digest: bytes | None = None


class Failure(msgspec.Struct, frozen=True):
    seq: int
    position: int  # 1-based place of the event in the chain (for an import: its line number)
    reason: str
    detail: str


class ChainCheck:
    """Verifies one conversation's events, given in chain order, as they are read."""

    def __init__(self, conversation_id: uuid.UUID, previous_hash: bytes = GENESIS_HASH) -> None:
        self.conversation_id = conversation_id
        self.head = previous_hash
        self.head_seq: int | None = None
        self.checked = 0
        self.bodies_checked = 0
        self.failure: Failure | None = None
        self._missing: dict[uuid.UUID, tuple[int, int]] = {}  # message -> (seq, position) awaiting a redaction
        # Redacted messages: a body may be gone by erasure, or because an export withheld it (an
        # import of a redacted message never receives its content).
        self._redacted: set[uuid.UUID] = set()

    def feed(self, batch: Iterable[Checked]) -> bool:
        """Check the next events; False once the chain has failed (later events prove nothing more)."""
        for item in batch:
            if self.failure is not None:
                return False
            self._check(item)
        return self.failure is None

    def _check(self, item: Checked) -> None:
        event, columns = item.event, item.event.columns
        self.checked += 1
        position, seq = self.checked, event.envelope.seq
        if event.envelope.conversation_id != self.conversation_id:
            self._fail(seq, Reason.CONVERSATION_MISMATCH, "The event belongs to another conversation.")
            return
        expected = chain_hash(self.head, event.envelope, event.columns)
        if expected != event.hash:
            self._fail(
                seq,
                Reason.HASH_MISMATCH,
                "The event does not hash to its stored link: it was altered, or an event before it "
                "was removed, inserted or reordered.",
            )
            return
        self.head, self.head_seq = event.hash, seq
        if columns.type == "message_appended" and columns.message_id is not None:
            if item.body_digest is None:
                self._missing[columns.message_id] = (seq, position)
            else:
                self.bodies_checked += 1
                if item.body_digest != columns.body_sha256:
                    self._fail(seq, Reason.BODY_MISMATCH, "The message's body does not match its recorded digest.")
        elif columns.type == "message_redacted":
            redaction = _redaction(columns.payload)
            if redaction is not None:
                self._redacted.add(redaction.message_id)

    def _fail(self, seq: int, reason: str, detail: str) -> None:
        self.failure = Failure(seq, self.checked, reason, detail)

    def first_failure(self) -> Failure | None:
        """The earliest failure: a break in the chain, or a body that is gone without a redaction.

        A missing body is judged against the redactions read so far; after a break nothing later is
        trusted, so a redaction that would come after the break cannot excuse it.
        """
        unexcused = [(seq, pos) for m, (seq, pos) in self._missing.items() if m not in self._redacted]
        if unexcused:
            seq, pos = min(unexcused)
            if self.failure is None or seq < self.failure.seq:
                return Failure(seq, pos, Reason.BODY_MISSING, "The message's body is gone but it was never redacted.")
        return self.failure

    @property
    def erased(self) -> int:
        return sum(1 for m in self._missing if m in self._redacted)

    def report(self, summary_hash: bytes | None, differences: list[str] | None = None) -> AuditReport:
        """The verdict, given the chain head the conversation's summary row records (None: not
        checked) and the summary's columns that differ from the log's fold (summary_differences)."""
        failure = self.first_failure()
        fields = None
        if failure is None and summary_hash is not None and summary_hash != self.head:
            failure = Failure(
                self.head_seq or 0,
                self.checked,
                Reason.HEAD_MISMATCH,
                "The conversation's summary records another chain head: events after this one were "
                "removed, or the summary was altered.",
            )
            fields = differences or None
        elif failure is None and differences:
            failure = Failure(
                self.head_seq or 0,
                self.checked,
                Reason.SUMMARY_MISMATCH,
                f"The conversation's summary was changed without an event: {', '.join(differences)} "
                "differ from what its log records.",
            )
            fields = differences
        return AuditReport(
            valid=failure is None,
            events_checked=self.checked,
            head_hash=None if self.head_seq is None else self.head.hex(),
            bodies_checked=self.bodies_checked,
            bodies_erased=self.erased,
            first_invalid_seq=None if failure is None else failure.seq,
            reason=None if failure is None else failure.reason,
            detail=None if failure is None else failure.detail,
            fields=fields,
        )


def _redaction(payload: str) -> MessageRedacted | None:
    try:
        event = from_columns(Columns("message_redacted", None, None, None, None, None, payload))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return event if isinstance(event, MessageRedacted) else None
